package config

import (
	"fmt"
	"net/netip"
)

// Well-known offsets into the service range. Kubernetes gives the first
// address of --service-cluster-ip-range to the "kubernetes" Service; like
// kube-dns and kops, the cluster DNS Service takes the tenth.
const (
	apiServiceIPOffset = 1
	clusterDNSIPOffset = 10
)

// APIServiceIP returns the ClusterIP of the "kubernetes" Service: the first
// address of ServiceCIDR. The API serving certificate names it.
func (n NetworkingSpec) APIServiceIP() (netip.Addr, error) {
	return n.serviceIP(apiServiceIPOffset)
}

// ClusterDNSIP returns the ClusterIP of the cluster DNS Service: the tenth
// address of ServiceCIDR. Kubelets point pods at it, and the DNS Service is
// created with it.
func (n NetworkingSpec) ClusterDNSIP() (netip.Addr, error) {
	return n.serviceIP(clusterDNSIPOffset)
}

// serviceIP returns the address offset places after the network address of
// ServiceCIDR, or an error naming the field when the range is not a CIDR or
// is too small to hold it.
func (n NetworkingSpec) serviceIP(offset int) (netip.Addr, error) {
	p, err := netip.ParsePrefix(n.ServiceCIDR)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("networking.serviceCIDR: %q is not a CIDR (for example 100.64.0.0/13)", n.ServiceCIDR)
	}
	p = p.Masked()
	a := p.Addr()
	for i := 0; i < offset && a.IsValid(); i++ {
		a = a.Next()
	}
	if !a.IsValid() || !p.Contains(a) {
		return netip.Addr{}, fmt.Errorf("networking.serviceCIDR: %s is too small to hold address number %d", p, offset)
	}
	return a, nil
}

// parseCanonicalCIDR parses a CIDR without host bits; ok is false for
// anything else (validation reports it where the field is checked).
func parseCanonicalCIDR(s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Masked() != p {
		return netip.Prefix{}, false
	}
	return p, true
}
