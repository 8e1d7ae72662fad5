//go:build tools

// Package tools pins the etcd server the e2e cluster runs (built by tests/e2e/build.sh): a release that real
// clusters run, with the progress-notify support kube-apiserver's watch cache relies on.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
