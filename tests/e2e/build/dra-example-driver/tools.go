//go:build tools

// Package tools pins the upstream example DRA driver's kubelet plugin, the peer the e2e suite compares
// dra-hami against (built by tests/e2e/build.sh).
package tools

import (
	_ "sigs.k8s.io/dra-example-driver/cmd/dra-example-kubeletplugin"
)
