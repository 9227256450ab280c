package membership

import (
	"testing"

	"github.com/kopsnode/agents/gossip/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m, "kopsnode/agents/gossip/") }
