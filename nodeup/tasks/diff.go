package tasks

import "github.com/kopsnode/agents/pkg/textdiff"

// unifiedDiff is the diff a dry run prints for a file; pkg/textdiff is its
// one home, shared with nodeup render.
func unifiedDiff(name string, a, b []byte) string { return textdiff.Unified(name, a, b) }
