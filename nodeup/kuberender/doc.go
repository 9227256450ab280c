// Package kuberender renders the Kubernetes objects nodeup writes to a node
// (KubeletConfiguration, kubeconfigs) from the official Go types, and
// containerd's configuration with a TOML encoder, in the schema of the
// installed containerd's major version. Every function is pure: it returns
// bytes and never touches the machine.
package kuberender
