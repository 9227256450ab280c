package units

import (
	"strings"
	"testing"
)

func TestProtokubeManifestsUnit(t *testing.T) {
	r := ProtokubeManifests([]string{"manifests", "--config=" + ManifestsConfigCopy}).Render()
	for _, want := range []string{
		"After=network-online.target kube-apiserver.service",
		"ExecStart=/usr/local/bin/protokube manifests --config=/etc/nodeup/manifests-nodeconfig.yaml",
		"Restart=always",
		"WantedBy=multi-user.target",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("protokube-manifests.service lacks %q:\n%s", want, r)
		}
	}
	if strings.Contains(r, "Requires=") {
		t.Errorf("protokube-manifests.service requires a unit; it waits for the API server itself:\n%s", r)
	}
}
