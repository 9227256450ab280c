package tasks

import (
	"testing"

	"github.com/kopsnode/agents/nodeup/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
