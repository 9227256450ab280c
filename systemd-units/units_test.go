package units

import (
	"strings"
	"testing"
)

func TestEnableLinks(t *testing.T) {
	content := "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target graphical.target\nRequiredBy=foo.target\nAlias=y.service\n"
	links := EnableLinks("x.service", content)
	var got []string
	for _, l := range links {
		got = append(got, l.Path+" -> "+l.Target)
	}
	want := []string{
		"/etc/systemd/system/foo.target.requires/x.service -> /etc/systemd/system/x.service",
		"/etc/systemd/system/graphical.target.wants/x.service -> /etc/systemd/system/x.service",
		"/etc/systemd/system/multi-user.target.wants/x.service -> /etc/systemd/system/x.service",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("links:\n%s", strings.Join(got, "\n"))
	}
	if l := EnableLinks("e.service", EtcdManager("main", nil).Render()); len(l) != 0 {
		t.Fatalf("etcd-manager unit is enabled by install links %v; protokube starts it", l)
	}
}

func TestRenderedUnits(t *testing.T) {
	for _, u := range []Unit{Containerd(), Kubelet("/etc/default/kubelet"), Protokube([]string{"run"}), EtcdManager("main", []string{"run"}), Nodeup("/etc/nodeup/boot.yaml")} {
		r := u.Render()
		if r != u.Render() {
			t.Fatalf("%s renders differently twice", u.Name)
		}
		if !strings.Contains(r, "[Service]\n") || !strings.Contains(r, "ExecStart=/usr/local/bin/") {
			t.Fatalf("%s:\n%s", u.Name, r)
		}
	}
	n := Nodeup("/etc/nodeup/boot.yaml").Render()
	for _, want := range []string{"Type=oneshot", "ExecStart=/usr/local/bin/nodeup apply --boot-config /etc/nodeup/boot.yaml", "WantedBy=multi-user.target"} {
		if !strings.Contains(n, want) {
			t.Errorf("nodeup.service lacks %q", want)
		}
	}
	k := Kubelet("/etc/default/kubelet").Render()
	if !strings.Contains(k, "EnvironmentFile=/etc/default/kubelet") || !strings.Contains(k, "After=containerd.service") {
		t.Fatalf("kubelet:\n%s", k)
	}
	if e := (Unit{Name: "a", Environment: []string{"A=b c"}}).Render(); !strings.Contains(e, `Environment="A=b c"`) {
		t.Fatalf("env quoting: %s", e)
	}
}
