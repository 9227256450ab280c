// Package pki keeps the cluster's certificate authorities in the state store
// and issues the certificates the agents use: serving, client and peer
// certificates for the Kubernetes API, etcd and etcd-manager, mutual-TLS
// configurations built from them, and kubeconfigs. Private keys are never
// printed: every key type here formats and logs as "REDACTED".
//
// The CA names, the store layout and the rotation thresholds are described
// in docs/pki.md.
package pki
