package config

import (
	"strings"
	"testing"
)

func TestServiceIPs(t *testing.T) {
	cases := []struct {
		cidr, api, dns, err string
	}{
		{cidr: "100.64.0.0/13", api: "100.64.0.1", dns: "100.64.0.10"},
		{cidr: "10.96.0.0/12", api: "10.96.0.1", dns: "10.96.0.10"},
		// Host bits are ignored: the range starts at its network address.
		{cidr: "10.96.3.7/16", api: "10.96.0.1", dns: "10.96.0.10"},
		{cidr: "fd00:10:96::/108", api: "fd00:10:96::1", dns: "fd00:10:96::a"},
		{cidr: "10.0.0.0/29", api: "10.0.0.1", err: "too small to hold address number 10"},
		{cidr: "", err: `networking.serviceCIDR: "" is not a CIDR`},
		{cidr: "10.0.0.0", err: `"10.0.0.0" is not a CIDR`},
	}
	for _, c := range cases {
		n := NetworkingSpec{ServiceCIDR: c.cidr}
		api, apiErr := n.APIServiceIP()
		dns, dnsErr := n.ClusterDNSIP()
		if c.api != "" {
			if apiErr != nil || api.String() != c.api {
				t.Errorf("%q: APIServiceIP = %v, %v; want %s", c.cidr, api, apiErr, c.api)
			}
		}
		if c.dns != "" {
			if dnsErr != nil || dns.String() != c.dns {
				t.Errorf("%q: ClusterDNSIP = %v, %v; want %s", c.cidr, dns, dnsErr, c.dns)
			}
		}
		if c.err != "" {
			got := dnsErr
			if c.api == "" {
				got = apiErr
			}
			if got == nil || !strings.Contains(got.Error(), c.err) {
				t.Errorf("%q: error = %v; want one containing %q", c.cidr, got, c.err)
			}
		}
	}
}
