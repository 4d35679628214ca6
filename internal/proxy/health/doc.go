// Package health serves the proxy's health answers, in kube-proxy's shapes.
//
// Two kinds of server live here:
//
//   - ProxyHealth answers /healthz and /livez (kube-proxy's :10256). A family
//     (IPv4, IPv6) is healthy while nothing is pending for it or its oldest
//     pending change is younger than 2 × syncPeriod. /healthz is also 503
//     while this Node is unknown, being deleted, or tainted
//     ToBeDeletedByClusterAutoscaler, so load balancers drain the node;
//     /livez ignores the Node, so the kubelet does not restart a proxy whose
//     node is merely going away.
//
//   - ServiceHealth runs one HTTP server per Service with
//     externalTrafficPolicy Local and a healthCheckNodePort. Any path answers
//     200 when the node has a local ready endpoint of the Service and the
//     proxy is healthy, else 503, so an external load balancer sends traffic
//     only to nodes that can serve it without a second hop.
//
// The JSON bodies, headers and status codes are the ones kube-proxy v1.36
// writes, byte for byte, so tooling that reads them keeps working.
package health
