package units

import (
	"slices"
	"strings"
	"testing"
)

func TestExecLineRoundTrip(t *testing.T) {
	args := []string{"--etcd-servers-overrides=/events#https://127.0.0.1:4002", "--a=b c", `--q="x"`, `--back=\d`, "--pct=50%", "--env=$HOME", "--semi=a;b", ""}
	line := ExecLine("/usr/local/bin/x", args)
	if strings.Contains(line, "50%-") || !strings.Contains(line, "50%%") || !strings.Contains(line, "$$HOME") {
		t.Errorf("specifiers or variables not escaped: %s", line)
	}
	got := SplitExecLine(line)
	want := append([]string{"/usr/local/bin/x"}, args...)
	if !slices.Equal(got, want) {
		t.Fatalf("round trip:\n got %q\nwant %q\nline %s", got, want, line)
	}
}

func TestControlPlaneUnits(t *testing.T) {
	for _, u := range []Unit{KubeAPIServer([]string{"--v=2"}), KubeControllerManager(nil), KubeScheduler(nil)} {
		r := u.Render()
		if !strings.Contains(r, "Restart=always") || !strings.Contains(r, "WantedBy=multi-user.target") {
			t.Errorf("%s:\n%s", u.Name, r)
		}
		if u.Name != "kube-apiserver.service" && !strings.Contains(r, "After=network-online.target kube-apiserver.service") {
			t.Errorf("%s does not start after the API server:\n%s", u.Name, r)
		}
	}
	if got := KubeAPIServer([]string{"--v=2"}).ExecStart; got != KubeAPIServerBin+" --v=2" {
		t.Errorf("ExecStart = %q", got)
	}
}
