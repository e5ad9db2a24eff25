// Package kubetest brings up a real one-node Kubernetes cluster on this
// machine for sandkey's tests: etcd, kube-apiserver and, when asked, a
// node (containerd, a CNI bridge and a kubelet). Nothing is faked: the
// binaries are the upstream ones, built from the Go module proxy by
// scripts/kube-tools.sh, and found through $SANDKEY_KUBE_BIN.
//
// No Kubernetes server is packaged for Debian 12 and no image registry is
// reachable here, so kind, k3s and every image-based cluster are out; see
// shared/TESTING.md for how each setting below was found.
//
// # Using it
//
//	c := kubetest.Start(t, kubetest.Options{Kubelet: true}) // or a Shared one
//	c.Namespace(t, "ns")                   // and its "default" ServiceAccount
//	c.ServiceAccount(t, "ns", "workload")  // no controller-manager makes them
//	c.ImportImage(t, "sandkey.local/x:1", layerDir, []string{"/x"})
//	pod := ...                             // see below
//	c.Client().CoreV1().Pods("ns").Create(ctx, pod, ...)
//
// The cluster has no controller-manager and no scheduler, so a pod must:
//
//   - name its node: spec.nodeName = c.NodeName();
//   - set automountServiceAccountToken: false (the default API-access
//     volume waits for the kube-root-ca.crt ConfigMap, which only the
//     controller-manager publishes), and mount a projected
//     serviceAccountToken volume itself when it needs a token;
//   - use a ServiceAccount that exists (Namespace makes "default";
//     ServiceAccount makes others);
//   - use imagePullPolicy: Never and an image ImportImage put into the
//     node (no registry is reachable).
//
// Identities: Client, RESTConfig and Kubeconfig are the admin (a static
// token in group system:masters). ConfigFor and KubeconfigFor mint a
// client certificate for any user and groups at any time, signed by the
// cluster's CA, which the API server trusts (--client-ca-file): RBAC
// applies to them as to any user, so a test binds them the roles it means
// to grant (the gateway needs system:auth-delegator for TokenReview).
//
// Deleting a namespace leaves it Terminating forever (no namespace
// controller); Namespace's cleanup deletes the namespace's pods and keeps
// the namespace.
//
// # The control plane
//
// etcd is one embedded member (tools/kube/etcd) with its client and peer
// URLs on free loopback ports and its data in the scratch tree; it prints
// "ready" once it serves. The API server then starts with:
//
//   - --bind-address and --advertise-address 127.0.0.1, and
//     --endpoint-reconciler-type=none: without it the API server refuses
//     to advertise a loopback address;
//   - a serving certificate from the cluster's own CA (made in Go at
//     start, ECDSA P-256), valid for 127.0.0.1 and the kubernetes service
//     names, so that clients verify the server;
//   - --token-auth-file: one line, the admin token (random per cluster);
//   - --service-account-{key,signing-key}-file: an ECDSA P-256 key made
//     in Go (ES256 tokens), and --service-account-issuer Issuer;
//   - --authorization-mode=RBAC: tests of who may do what are real;
//   - --kubelet-preferred-address-types=InternalIP: the node has no DNS
//     name, and exec and logs fail without it.
//
// Readiness is /readyz. StopAPIServer and StartAPIServer stop and start
// the same process again (same port, keys, tokens and etcd), for tests of
// an API server that goes away. Teardown stops the API server before
// etcd: the other order hangs the API server's graceful shutdown.
//
// # Missing binaries
//
// When $SANDKEY_KUBE_BIN is unset or lacks a binary, or a node is asked
// for without root or without containerd, runc, iproute2 or the CNI
// plugins, Start and Shared skip the test with a message saying what to
// run, except under CI=true, where they fail: CI must never pass by
// skipping Kubernetes. `make test` builds the binaries (once per machine)
// and sets the variable.
//
// # Sharing
//
// A cluster takes seconds to start; a package's tests share one through a
// Shared value whose Stop the package's TestMain calls after m.Run. Start
// starts one for a single test.
package kubetest
