package gossipd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/hlc"
	"github.com/kopsnode/agents/gossip/leakcheck"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/protokube/podnet"
)

// nodeEnv makes the test binary run one gossip daemon instead of the tests:
// the network namespace tests start it inside each host with `ip netns
// exec`, so each node is a real process with its own network stack. The
// production daemon code runs unchanged; the test node only adds a clock
// offset and a control channel on stdin ("put KEY VALUE", "del KEY").
const nodeEnv = "GOSSIPD_TEST_NODE"

type testNodeSpec struct {
	Config      Config
	StoreDir    string
	ClockOffset time.Duration
	// PodCIDR stands in for the Node object's spec.podCIDR when the pod
	// network is on (no API server in these tests).
	PodCIDR string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(nodeEnv); spec != "" {
		os.Exit(runTestNode(spec))
	}
	leakcheck.Main(m, "kopsnode/agents/gossip/", "kopsnode/agents/protokube/")
}

func runTestNode(spec string) int {
	var s testNodeSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintf(os.Stderr, "test node: %s: %v\n", nodeEnv, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", s.Config.NodeName)
	st, err := file.New(s.StoreDir, file.Options{})
	if err != nil {
		log.Error("opening store", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	clock := hlc.New(func() time.Time { return time.Now().Add(s.ClockOffset) }, time.Minute)
	deps := Deps{Clock: clock, Logger: log, Store: st}
	if s.PodCIDR != "" {
		p, err := netip.ParsePrefix(s.PodCIDR)
		if err != nil {
			log.Error("test node pod CIDR", "err", err)
			return 2
		}
		deps.PodNodes = podnet.StaticNode(p)
	}
	d, err := Start(ctx, s.Config, deps)
	if err != nil {
		log.Error("starting", "err", err)
		return 1
	}
	defer d.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return 0
		case l, ok := <-lines:
			if !ok {
				return 0
			}
			f := strings.SplitN(l, " ", 3)
			switch {
			case len(f) == 3 && f[0] == "put":
				err = d.Table().Put(f[1], []byte(f[2]))
			case len(f) == 2 && f[0] == "del":
				err = d.Table().Delete(f[1])
			default:
				err = fmt.Errorf("unknown command %q", l)
			}
			if err != nil {
				log.Error("command", "line", l, "err", err)
			}
		}
	}
}
