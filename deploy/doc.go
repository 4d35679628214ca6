// Package deploy holds the manifests that run svcproxy in a cluster in
// place of kube-proxy: daemonset.yaml, rbac.yaml and configmap.yaml. Its
// test checks that they decode, that the RBAC is least privilege and that
// the DaemonSet's command line and config are ones svcproxy accepts.
package deploy
