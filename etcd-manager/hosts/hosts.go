// Package hosts maintains a managed block in a hosts file (/etc/hosts): the
// lines between a begin and an end marker belong to one owner and are
// rewritten atomically; everything else in the file is kept as it was.
// (A small writer of our own, so etcd-manager does not depend on gossip.)
package hosts

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Record maps a name to an address.
type Record struct {
	Name string
	IP   string
}

func markers(owner string) (string, string) {
	return "# Begin " + owner + " (managed; do not edit)", "# End " + owner
}

// Render returns content with the owner's block replaced by records
// (sorted, one line per address), appended at the end when absent, or
// removed when records is empty. It fails on a begin marker without end.
func Render(content []byte, owner string, records []Record) ([]byte, error) {
	begin, end := markers(owner)
	lines := strings.SplitAfter(string(content), "\n")
	var out []string
	inBlock, found := false, false
	insertAt := -1
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		switch {
		case t == begin:
			if inBlock || found {
				return nil, fmt.Errorf("line %d: second %q", i+1, begin)
			}
			inBlock, found = true, true
			insertAt = len(out)
		case t == end && inBlock:
			inBlock = false
		case inBlock:
		default:
			if l != "" {
				out = append(out, l)
			}
		}
	}
	if inBlock {
		return nil, fmt.Errorf("%q without %q", begin, end)
	}
	block := renderBlock(begin, end, records)
	if insertAt < 0 {
		if len(out) > 0 && !strings.HasSuffix(out[len(out)-1], "\n") {
			out[len(out)-1] += "\n"
		}
		insertAt = len(out)
	}
	res := append(append(append([]string{}, out[:insertAt]...), block...), out[insertAt:]...)
	return []byte(strings.Join(res, "")), nil
}

func renderBlock(begin, end string, records []Record) []string {
	if len(records) == 0 {
		return nil
	}
	byIP := map[string][]string{}
	for _, r := range records {
		byIP[r.IP] = append(byIP[r.IP], r.Name)
	}
	ips := make([]string, 0, len(byIP))
	for ip := range byIP {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	lines := []string{begin + "\n"}
	for _, ip := range ips {
		names := byIP[ip]
		sort.Strings(names)
		lines = append(lines, ip+"\t"+strings.Join(names, " ")+"\n")
	}
	return append(lines, end+"\n")
}

// Validate checks records.
func Validate(records []Record) error {
	var errs []error
	for i, r := range records {
		if net.ParseIP(r.IP) == nil {
			errs = append(errs, fmt.Errorf("records[%d].ip: %q is not an IP address", i, r.IP))
		}
		if r.Name == "" || strings.ContainsAny(r.Name, " \t\n#") {
			errs = append(errs, fmt.Errorf("records[%d].name: %q is not a host name", i, r.Name))
		}
	}
	return errors.Join(errs...)
}

// Update rewrites the owner's block of the file at path. It writes only when
// the content changes, through a temp file and rename; when the rename is
// refused (a bind-mounted /etc/hosts in a container) it rewrites in place.
func Update(path, owner string, records []Record) (changed bool, err error) {
	if err := Validate(records); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	next, err := Render(old, owner, records)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if bytes.Equal(old, next) {
		return false, nil
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(next); err == nil {
		err = f.Chmod(mode)
		if err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		if werr := os.WriteFile(path, next, mode); werr != nil {
			return false, fmt.Errorf("replacing %s: %v; writing in place: %w", path, err, werr)
		}
	}
	return true, nil
}
