// Command basetrees builds the Debian trees the booted-machine tests boot
// (e2e/machine's base and node trees) into $TOOLS_DIR/debootstrap unless
// they are there. The tests build them on first use; tools/build-test-tools.sh
// runs this beside the compiles of a cold `make tools`, as root, so the
// downloads and package unpacking overlap them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kopsnode/agents/e2e/machine"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "basetrees: "+format+"\n", args...) }
	if err := machine.BuildTrees(ctx, logf); err != nil {
		fmt.Fprintf(os.Stderr, "basetrees: %v\n", err)
		os.Exit(1)
	}
	logf("trees ready in %s", time.Since(start).Round(time.Second))
}
