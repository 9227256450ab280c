package nodecheck

import (
	"testing"
	"time"
)

// FuzzNodeFiles: whatever a node's kubeconfig, certificate file, CSR or
// readyz body holds, the checks report it and never panic.
func FuzzNodeFiles(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Config\ncurrent-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: https://a}\nusers:\n- name: u\n  user: {client-certificate: "+kubeletCertPath+"}\n"),
		[]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("{}"), []byte(""))
	f.Fuzz(func(t *testing.T, kubeconfig, cert []byte) {
		files := memFiles{testPaths.KubeletKubeconfig: kubeconfig, kubeletCertPath: cert}
		k, err := LoadKubeconfig(files, testPaths.KubeletKubeconfig)
		c := CheckCertificate(k, err, testPaths.KubeletKubeconfig, time.Now())
		if c.Issued && c.Path == "" {
			t.Errorf("issued without a path: %+v", c)
		}
		_ = certNodeName(k)
		_ = requestCN(cert)
		_ = readyzSummary("500", cert)
	})
}
