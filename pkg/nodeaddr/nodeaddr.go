// Package nodeaddr finds this node's primary IP address: the source address
// the kernel would use for the default route. Daemons use it when no address
// is configured, so the units nodeup writes need no per-node values.
package nodeaddr

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// Primary returns the preferred source address of the IPv4 default route,
// or of the IPv6 one when there is no IPv4 default route. It asks the kernel's
// routing table (RTM_GETROUTE); no packet is sent.
func Primary() (net.IP, error) {
	var errs []error
	for _, probe := range []string{"192.0.2.1", "2001:db8::1"} { // documentation addresses, never contacted
		routes, err := netlink.RouteGet(net.ParseIP(probe))
		if err != nil {
			errs = append(errs, fmt.Errorf("route lookup for %s: %w", probe, err))
			continue
		}
		for _, r := range routes {
			if r.Src != nil && !r.Src.IsUnspecified() {
				return r.Src, nil
			}
		}
		errs = append(errs, fmt.Errorf("route for %s has no source address", probe))
	}
	return nil, fmt.Errorf("finding this node's address (set it explicitly): %w", errors.Join(errs...))
}
