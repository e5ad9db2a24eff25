// Package k8se2e runs the kubernetes driver end to end: the real gateway
// and supervisor binaries, a real one-node cluster (etcd, kube-apiserver,
// containerd, a CNI bridge and a kubelet, from pkg/driver/kubetest), real
// pods, real projected ServiceAccount tokens and real TokenReviews.
//
// The cluster runs no scheduler (kubetest's binder stands in for it).
// Everything else is what an operator runs: the gateway is started with --drivers kubernetes
// and a kubeconfig for a user holding exactly the RBAC of
// deploy/kubernetes (system:auth-delegator, pods in its namespace), and
// the supervisors dial its shared TLS listener on the bridge's host
// address, trusting a CA the test makes.
//
// One cluster serves the package (its TestMain stops it); each test has a
// namespace, a gateway and a state directory of its own. The tests run one
// at a time: one stops the cluster's API server.
package k8se2e
