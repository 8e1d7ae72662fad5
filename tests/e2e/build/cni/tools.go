//go:build tools

// Package tools pins the reference CNI plugins that give the e2e cluster its pod network (built by
// tests/e2e/build.sh): bridge and host-local for the pods' own addresses, loopback, portmap for hostPorts.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
