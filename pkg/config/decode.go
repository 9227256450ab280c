package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// MaxDocumentSize is the largest configuration document accepted, in bytes.
// Real documents are a few kilobytes; the cap bounds the memory a hostile
// document can make the parser use.
const MaxDocumentSize = 1 << 20

// maxValues bounds the number of YAML values the decoder visits, counting
// every expansion of an alias, so that an alias bomb (a list of aliases to
// lists of aliases) fails quickly instead of expanding exponentially.
const maxValues = 10000

// maxAliasChain bounds alias-to-alias hops, which guards against cycles.
const maxAliasChain = 32

// position is where a value starts in the source document.
type position struct{ line, col int }

// decoded is the result of decoding one document: the typed value and the
// position of every field path that was present in the YAML, used to place
// validation errors.
type decoded struct {
	doc any
	// pos is where each field's value starts; keyPos is where the key of
	// each map entry or struct field starts.
	pos, keyPos map[string]position
}

// DecodeCluster strictly decodes a Cluster document. source (a file name or
// URL) is used in error messages. It does not apply defaults or validate;
// see ParseCluster for all three. The error, if any, is an *Errors.
func DecodeCluster(data []byte, source string) (*Cluster, error) {
	d, err := decode(data, source, KindCluster)
	if err != nil {
		return nil, err
	}
	return d.doc.(*Cluster), nil
}

// DecodeNodeConfig strictly decodes a NodeConfig document. source (a file
// name or URL) is used in error messages. It does not apply defaults or
// validate; see ParseNodeConfig for all three. The error, if any, is an
// *Errors.
func DecodeNodeConfig(data []byte, source string) (*NodeConfig, error) {
	d, err := decode(data, source, KindNodeConfig)
	if err != nil {
		return nil, err
	}
	return d.doc.(*NodeConfig), nil
}

// Decode strictly decodes a document of any kind of this API, chosen by its
// apiVersion and kind, and returns a *Cluster or a *NodeConfig. The error, if
// any, is an *Errors.
func Decode(data []byte, source string) (any, error) {
	d, err := decode(data, source, "")
	if err != nil {
		return nil, err
	}
	return d.doc, nil
}

// decode parses data as exactly one YAML document and decodes it into the
// type named by its kind, which must be want unless want is empty.
func decode(data []byte, source, want string) (*decoded, error) {
	errs := &Errors{}
	fail := func(line, col int, path, msg string) (*decoded, error) {
		*errs = append(*errs, FieldError{Source: source, Line: line, Column: col, Path: path, Msg: msg})
		return nil, errs.err()
	}
	if len(data) > MaxDocumentSize {
		return fail(0, 0, "", fmt.Sprintf("document is %d bytes, larger than the limit of %d bytes", len(data), MaxDocumentSize))
	}
	root, perr := parseYAML(data, source)
	if perr != nil {
		*errs = append(*errs, *perr)
		return nil, errs.err()
	}
	if root.Kind != yaml.MappingNode {
		return fail(root.Line, root.Column, "", fmt.Sprintf("expected a map at the top of the document, got %s", describe(root)))
	}

	// apiVersion and kind select the schema, so they are checked before
	// anything else; with a wrong schema every other error would be noise.
	apiVersion, apiNode := topScalar(root, "apiVersion")
	kind, kindNode := topScalar(root, "kind")
	switch {
	case apiNode == nil:
		*errs = append(*errs, FieldError{Source: source, Line: root.Line, Column: root.Column, Path: "apiVersion", Msg: fmt.Sprintf("required; must be %q", APIVersion)})
	case apiNode.Kind != yaml.ScalarNode:
		*errs = append(*errs, FieldError{Source: source, Line: apiNode.Line, Column: apiNode.Column, Path: "apiVersion", Msg: "expected a string, got " + describe(apiNode)})
	case apiVersion != APIVersion:
		*errs = append(*errs, FieldError{Source: source, Line: apiNode.Line, Column: apiNode.Column, Path: "apiVersion", Msg: fmt.Sprintf("%q is not supported; must be %q", apiVersion, APIVersion)})
	}
	var out any
	switch {
	case kindNode == nil:
		msg := fmt.Sprintf("required; must be %q or %q", KindCluster, KindNodeConfig)
		if want != "" {
			msg = fmt.Sprintf("required; must be %q", want)
		}
		*errs = append(*errs, FieldError{Source: source, Line: root.Line, Column: root.Column, Path: "kind", Msg: msg})
	case kindNode.Kind != yaml.ScalarNode:
		*errs = append(*errs, FieldError{Source: source, Line: kindNode.Line, Column: kindNode.Column, Path: "kind", Msg: "expected a string, got " + describe(kindNode)})
	case want != "" && kind != want:
		*errs = append(*errs, FieldError{Source: source, Line: kindNode.Line, Column: kindNode.Column, Path: "kind", Msg: fmt.Sprintf("expected %q, got %q", want, kind)})
	case kind == KindCluster:
		out = &Cluster{}
	case kind == KindNodeConfig:
		out = &NodeConfig{}
	default:
		*errs = append(*errs, FieldError{Source: source, Line: kindNode.Line, Column: kindNode.Column, Path: "kind", Msg: fmt.Sprintf("%q is not a known kind; must be %q or %q", kind, KindCluster, KindNodeConfig)})
	}
	if len(*errs) > 0 {
		return nil, errs.err()
	}

	w := &walker{source: source, errs: errs, pos: map[string]position{}, keyPos: map[string]position{}, budget: maxValues}
	w.value(root, reflect.ValueOf(out).Elem(), "")
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &decoded{doc: out, pos: w.pos, keyPos: w.keyPos}, nil
}

// yamlLineRE finds the line number in an error message of yaml.v3.
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML parses data into a node tree and returns the root value of its
// only document.
func parseYAML(data []byte, source string) (root *yaml.Node, ferr *FieldError) {
	// yaml.v3 has no known panics on v3.0.1, but a parser bug must not take
	// a node agent down with it.
	defer func() {
		if r := recover(); r != nil {
			root = nil
			ferr = &FieldError{Source: source, Msg: fmt.Sprintf("YAML parser failed: %v", r)}
		}
	}()
	toFieldError := func(err error) *FieldError {
		msg := err.Error()
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			return &FieldError{Source: source, Line: line, Msg: "invalid YAML: " + m[2]}
		}
		return &FieldError{Source: source, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{Source: source, Msg: "empty document"}
		}
		return nil, toFieldError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		line, col := extra.Line, extra.Column
		if len(extra.Content) > 0 {
			line, col = extra.Content[0].Line, extra.Content[0].Column
		}
		return nil, &FieldError{Source: source, Line: line, Column: col, Msg: "more than one YAML document; a configuration file holds exactly one"}
	case !errors.Is(err, io.EOF):
		return nil, toFieldError(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0] == nil {
		return nil, &FieldError{Source: source, Msg: "empty document"}
	}
	root = doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, &FieldError{Source: source, Line: root.Line, Column: root.Column, Msg: "empty document"}
	}
	return root, nil
}

// topScalar returns the value of a top-level scalar key of a mapping node.
func topScalar(m *yaml.Node, key string) (string, *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == key {
			if v.Kind == yaml.ScalarNode {
				return v.Value, v
			}
			return "", v
		}
	}
	return "", nil
}

// walker decodes a node tree into Go values, strictly, collecting every
// problem it finds.
type walker struct {
	source    string
	errs      *Errors
	pos       map[string]position
	keyPos    map[string]position
	budget    int
	exhausted bool
}

func (w *walker) fail(n *yaml.Node, path, msg string) {
	*w.errs = append(*w.errs, FieldError{Source: w.source, Line: n.Line, Column: n.Column, Path: path, Msg: msg})
}

// resolve follows aliases to the node they name.
func (w *walker) resolve(n *yaml.Node, path string) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode; i++ {
		if n.Alias == nil || i >= maxAliasChain {
			w.fail(n, path, "alias cannot be resolved")
			return nil
		}
		n = n.Alias
	}
	return n
}

// spend counts one visited value against the budget.
func (w *walker) spend(n *yaml.Node, path string) bool {
	w.budget--
	if w.budget >= 0 {
		return true
	}
	if !w.exhausted {
		w.exhausted = true
		w.fail(n, path, fmt.Sprintf("document has more than %d values (each use of an alias counted); a configuration has a few hundred", maxValues))
	}
	return false
}

// isStandardTag says whether the decoder understands a YAML tag.
func isStandardTag(tag string) bool {
	switch tag {
	case "!!str", "!!int", "!!float", "!!bool", "!!null", "!!map", "!!seq":
		return true
	}
	return false
}

// value decodes n into v, whose field path is path.
func (w *walker) value(n *yaml.Node, v reflect.Value, path string) {
	if !w.spend(n, path) {
		return
	}
	if n = w.resolve(n, path); n == nil {
		return
	}
	w.pos[path] = position{n.Line, n.Column}
	if tag := n.ShortTag(); !isStandardTag(tag) {
		w.fail(n, path, fmt.Sprintf("unsupported YAML tag %q", tag))
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		// An empty value means "not set", as if the key were absent.
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		w.value(n, p.Elem(), path)
		v.Set(p)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "expected a map, got "+describe(n))
			return
		}
		w.structFields(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "expected a list, got "+describe(n))
			return
		}
		if len(n.Content) == 0 {
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			w.value(item, s.Index(i), path+"["+strconv.Itoa(i)+"]")
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "expected a map, got "+describe(n))
			return
		}
		w.mapEntries(n, v, path)
	case reflect.String:
		s, ok := w.scalarString(n, path)
		if ok {
			v.SetString(s)
		}
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			w.fail(n, path, "expected an integer, got "+describe(n))
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || i < math.MinInt32 || i > math.MaxInt32 {
			w.fail(n, path, fmt.Sprintf("integer %s is out of range", n.Value))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			w.fail(n, path, "expected true or false, got "+describe(n))
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			w.fail(n, path, "expected true or false, got "+describe(n))
			return
		}
		v.SetBool(b)
	default:
		w.fail(n, path, fmt.Sprintf("internal error: cannot decode into Go type %s", v.Type()))
	}
}

// scalarString returns the text of a scalar for a string-typed field. Plain
// numbers and booleans are taken as their literal text ("1.30" stays
// "1.30"), which is what someone writing a version or a sysctl value means.
func (w *walker) scalarString(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		w.fail(n, path, "expected a string, got "+describe(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool":
	default:
		w.fail(n, path, "expected a string, got "+describe(n))
		return "", false
	}
	if !utf8.ValidString(n.Value) {
		w.fail(n, path, "string is not valid UTF-8")
		return "", false
	}
	return n.Value, true
}

// structField is a field of a Go struct as the YAML names it.
type structField struct {
	name  string
	index []int
}

// fieldsOf lists the YAML fields of a struct type, with inline structs
// flattened.
func fieldsOf(t reflect.Type) []structField {
	var out []structField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") && f.Type.Kind() == reflect.Struct {
			for _, sub := range fieldsOf(f.Type) {
				sub.index = append([]int{i}, sub.index...)
				out = append(out, sub)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, structField{name: name, index: []int{i}})
	}
	return out
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// mapKey checks a mapping key and returns its text.
func (w *walker) mapKey(k *yaml.Node, path string) (string, bool) {
	if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
		w.fail(k, path, "YAML merge keys (<<) are not supported; write the fields out")
		return "", false
	}
	if k.Kind != yaml.ScalarNode {
		w.fail(k, path, "map key must be a string, got "+describe(k))
		return "", false
	}
	switch k.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool":
	default:
		w.fail(k, path, "map key must be a string, got "+describe(k))
		return "", false
	}
	if !utf8.ValidString(k.Value) {
		w.fail(k, path, "map key is not valid UTF-8")
		return "", false
	}
	return k.Value, true
}

// structFields decodes a mapping node into a struct.
func (w *walker) structFields(n *yaml.Node, v reflect.Value, path string) {
	fields := fieldsOf(v.Type())
	byName := make(map[string]structField, len(fields))
	for _, f := range fields {
		byName[f.name] = f
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := w.resolve(n.Content[i], path)
		if k == nil {
			continue
		}
		name, ok := w.mapKey(k, path)
		if !ok {
			continue
		}
		fpath := joinPath(path, name)
		if first, dup := seen[name]; dup {
			w.fail(k, fpath, fmt.Sprintf("duplicate field (first set at line %d)", first.Line))
			continue
		}
		seen[name] = k
		w.keyPos[fpath] = position{k.Line, k.Column}
		f, known := byName[name]
		if !known {
			w.fail(k, fpath, unknownFieldMsg(name, fields))
			continue
		}
		w.value(n.Content[i+1], v.FieldByIndex(f.index), fpath)
	}
}

// mapEntries decodes a mapping node into a Go map with string keys.
func (w *walker) mapEntries(n *yaml.Node, v reflect.Value, path string) {
	if len(n.Content) == 0 {
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := w.resolve(n.Content[i], path)
		if k == nil {
			continue
		}
		key, ok := w.mapKey(k, path)
		if !ok {
			continue
		}
		kpath := path + "[" + strconv.Quote(key) + "]"
		if first, dup := seen[key]; dup {
			w.fail(k, kpath, fmt.Sprintf("duplicate key (first set at line %d)", first.Line))
			continue
		}
		seen[key] = k
		w.keyPos[kpath] = position{k.Line, k.Column}
		elem := reflect.New(v.Type().Elem()).Elem()
		w.value(n.Content[i+1], elem, kpath)
		m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

// unknownFieldMsg says a field is unknown and suggests the closest known one.
func unknownFieldMsg(name string, fields []structField) string {
	best, bestDist := "", 3
	for _, f := range fields {
		if strings.EqualFold(f.name, name) {
			best, bestDist = f.name, 0
			break
		}
		if d := editDistance(strings.ToLower(name), strings.ToLower(f.name)); d < bestDist {
			best, bestDist = f.name, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown field (did you mean %q?)", best)
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	return "unknown field (known fields: " + strings.Join(names, ", ") + ")"
}

// editDistance is the Levenshtein distance between two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names the kind of a YAML value for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("the string %q", v)
	case "!!int", "!!float":
		return fmt.Sprintf("the number %s", v)
	case "!!bool":
		return fmt.Sprintf("the boolean %s", v)
	case "!!null":
		return "null"
	}
	return fmt.Sprintf("%s %q", n.ShortTag(), v)
}
