package config

import (
	"math"
	"sort"
	"strconv"
	"strings"
)

// FieldError is one problem found in a configuration document. Source is the
// file name or URL the document came from; Line and Column (1-based) point
// into it and are zero when unknown (for example a defaulted field, or a
// document validated without having been decoded from YAML). Path is the
// field path in the style spec.etcdClusters[1].version; it is empty for
// problems with the document as a whole.
type FieldError struct {
	Source string
	Line   int
	Column int
	Path   string
	Msg    string
}

// Error formats the problem as <source>:<line>:<col>: <path>: <msg>, leaving
// out the parts that are unknown.
func (e FieldError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
			if e.Column > 0 {
				b.WriteString(":")
				b.WriteString(strconv.Itoa(e.Column))
			}
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Column))
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a document, in document order. It is the
// error type returned by the decoding, validation and parsing functions of
// this package; use errors.As to get at the individual problems.
type Errors []FieldError

// Error prints one problem per line.
func (es *Errors) Error() string {
	if es == nil || len(*es) == 0 {
		return "no errors"
	}
	lines := make([]string, len(*es))
	for i, e := range *es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// add appends a problem.
func (es *Errors) add(path, msg string) {
	*es = append(*es, FieldError{Path: path, Msg: msg})
}

// err returns es as an error, or nil when there are no problems. Problems
// are sorted by position, stably, so the output follows the file; problems
// without a position come last in the order they were found.
func (es *Errors) err() error {
	if es == nil || len(*es) == 0 {
		return nil
	}
	key := func(e FieldError) (int, int) {
		if e.Line <= 0 {
			return math.MaxInt, 0
		}
		return e.Line, e.Column
	}
	sort.SliceStable(*es, func(i, j int) bool {
		li, ci := key((*es)[i])
		lj, cj := key((*es)[j])
		if li != lj {
			return li < lj
		}
		return ci < cj
	})
	return es
}
