package gossipkeys

import (
	"os"
	"testing"

	"github.com/kopsnode/agents/gossip/leakcheck"
	"github.com/kopsnode/agents/pkg/cli"
)

// cliEnv makes the test binary run `protokube gossip-keys` with its
// arguments instead of the tests, so that tests can race real processes.
const cliEnv = "GOSSIPKEYS_TEST_CLI"

func testApp() *cli.App {
	return &cli.App{Name: "protokube", Summary: "test", Commands: []*cli.Command{Command()}}
}

func TestMain(m *testing.M) {
	if os.Getenv(cliEnv) != "" {
		os.Exit(testApp().Main())
	}
	leakcheck.Main(m, "kopsnode/agents/gossip/", "kopsnode/agents/protokube/")
}
