// Command fakeservice stands in for a daemon (containerd, kubelet,
// protokube) in end-to-end tests: it tells systemd it is ready when run by
// a Type=notify unit, then waits until it is stopped. Bytes appended after
// the binary (see the e2e tests) give each fake asset its own sha256.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if sock := os.Getenv("NOTIFY_SOCKET"); sock != "" {
		if err := notify(sock, "READY=1\nSTATUS=fake service running"); err != nil {
			fmt.Fprintf(os.Stderr, "fakeservice: notifying systemd at %s: %v\n", sock, err)
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "fakeservice: %s running with %q\n", os.Args[0], os.Args[1:])
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	s := <-ch
	fmt.Fprintf(os.Stderr, "fakeservice: %v, exiting\n", s)
}

// notify sends one sd_notify datagram.
func notify(sock, msg string) error {
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}
