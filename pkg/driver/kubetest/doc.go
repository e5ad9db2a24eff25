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
//	ns := c.NewNamespace(t, "driver")      // driver-<random>, and its "default" ServiceAccount
//	c.ServiceAccount(t, ns, "workload")    // no controller-manager makes them
//	c.ImportImage(t, "sandkey.local/x:1", layerDir, []string{"/x"}) // no registry
//	l, _ := net.Listen("tcp", c.HostIP()+":0") // pods reach the host here
//	c.Client().CoreV1().Pods(ns).Create(ctx, pod, ...) // see below
//	c.WaitPodReady(t, ns, pod.Name)
//
// The cluster has no kube-scheduler and no kube-controller-manager (no
// module here builds them). What a pod needs of them, the harness does:
//
//   - a binder stands in for the scheduler: it binds every pod that has
//     no spec.nodeName (and asks for the default scheduler) to the one
//     node, through the real Binding API; a pod may also name
//     c.NodeName() itself;
//   - Namespace (and the start, for "default") creates the namespace's
//     "default" ServiceAccount and its kube-root-ca.crt ConfigMap, which
//     the default API-access token volume waits for. Other
//     ServiceAccounts: ServiceAccount. A namespace made otherwise lacks
//     both, and its pods then need automountServiceAccountToken: false
//     (a sandbox should not get an API token anyway);
//   - nothing else runs: no garbage collection, no ReplicaSets or Jobs,
//     no namespace deletion (a deleted namespace stays Terminating; so
//     Namespace's cleanup deletes the namespace's pods and keeps it), no
//     token cleanup.
//
// Images: imagePullPolicy: Never and an image ImportImage put into the
// node (no registry is reachable).
//
// Identities: Client, RESTConfig and Kubeconfig are the admin (a static
// token in group system:masters). ConfigFor and KubeconfigFor mint a
// client certificate for any user and groups at any time, signed by the
// cluster's CA, which the API server trusts (--client-ca-file): RBAC
// applies to them as to any user, so a test binds them the roles it means
// to grant (the gateway needs system:auth-delegator for TokenReview).
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
//   - --client-ca-file: the CA, so that ConfigFor's certificates
//     authenticate;
//   - --service-account-{key,signing-key}-file: an ECDSA P-256 key made
//     in Go (ES256 tokens), and --service-account-issuer Issuer;
//   - --authorization-mode=RBAC: tests of who may do what are real;
//   - --kubelet-preferred-address-types=InternalIP: the node has no DNS
//     name, and exec and logs fail without it;
//   - --shutdown-watch-termination-grace-period=2s: without it, a
//     stopping API server leaves the kubelet's watches open and waits the
//     whole request timeout (60 s) for them to end.
//
// Readiness is /readyz. StopAPIServer and StartAPIServer stop and start
// the same process again (same port, keys, tokens and etcd), for tests of
// an API server that goes away; the node keeps running meanwhile.
// Teardown stops the API server before etcd: the other order hangs the
// API server's graceful shutdown.
//
// # The node
//
// With Options.Kubelet, a node joins, in this order:
//
//  1. Its network: the first free slot i of 256 (a lock file
//     /run/sandkey-kubetest-net-<i>.lock, held while the node lives, so
//     that the clusters of two test packages running at once never meet)
//     whose subnet no other interface routes. The harness makes the Linux
//     bridge skk<i> itself, with address 10.88.<i>.1/24: that address is
//     HostIP, the host as pods see it. The bridge has a fixed MAC address
//     (02:73:6b:6b:00:<i>): one without takes the lowest of its ports',
//     which changes when a pod goes, and the other pods could not reach
//     HostIP until their ARP entries expired, about a minute.
//  2. Its cgroup root, /sandkey-kubetest-skk<i> in every hierarchy (the
//     kubelet's cgroupRoot, with cgroupsPerQOS): a kubelet treats every
//     pod cgroup under its root it does not know as an orphan to remove,
//     so two nodes must never share one. A new v1 cpuset cgroup has no
//     CPUs; it gets its parent's.
//  3. The CNI configuration: bridge skk<i> with isGateway false (the
//     bridge has its address already; isGateway true would also turn on
//     IP forwarding on the host) and ipMasq false, host-local addresses
//     from the /24, kept in the scratch tree. Pods get the subnet's route
//     only: nothing beyond the bridge, no default route.
//  4. containerd (Debian's 1.6) on a configuration of its own: root,
//     state, socket, runc root and the CNI directories in the scratch
//     tree; restrict_oom_score_adj (root here lacks CAP_SYS_RESOURCE, and
//     runc fails with "can't get final child's PID from pipe: EOF"
//     without it); disable_apparmor; netns_mounts_under_state_dir (pod
//     network namespaces in the scratch tree, not /run/netns); snapshotter
//     overlayfs; runc v2 with SystemdCgroup false; the stream server
//     (exec, logs) on loopback; sandbox_image PauseImage.
//  5. The pause image: package pause (a static Go program that waits for
//     SIGTERM and reaps), built with CGO_ENABLED=0 and imported like any
//     image (see below).
//  6. The kubelet, NodeName, with --kubeconfig (the admin's: it is no
//     system:node identity and no Node authorizer runs), --root-dir
//     and --cert-dir in the scratch tree, and --node-ip the address of
//     the default route's interface (it refuses loopback). Its
//     configuration: cgroupfs; failCgroupV1 false (cgroups here are v1);
//     failSwapOn false; enforceNodeAllocatable []; anonymous
//     authentication and AlwaysAllow on its own API, listening on the
//     node IP on a free port (healthz and read-only ports off);
//     rotateCertificates false; eviction thresholds near zero, image GC
//     off and localStorageCapacityIsolation false (its filesystem stats
//     fail here, harmlessly); podLogsDir and volumePluginDir in the
//     scratch tree; makeIPTablesUtilChains false (no KUBE-* chains on the
//     host). Ready is the node's Ready condition. The binder starts
//     just before it.
//
// What the node still writes outside the scratch tree: links in
// /var/log/containers, its device-plugin socket
// /var/lib/kubelet/device-plugins/kubelet.sock (a fixed path: two nodes
// at once overwrite each other's, harmlessly, as no device plugin runs),
// CNI's result cache in /var/lib/cni/results, and six kernel settings
// every kubelet sets at start (vm.overcommit_memory, kernel.panic, ...;
// see kubeletSysctls). The first node of the machine records those
// settings (/run/sandkey-kubetest-nodes.json, written through a rename,
// read in this and the harness's first format; every node holds a shared
// lock on /run/sandkey-kubetest-nodes.lock), with which of those paths
// were already there, and the last one restores the settings and removes
// the socket and the directories it leaves empty, except those that were
// there before (a kubelet of the machine's own).
//
// # Images
//
// No registry is reachable. ImportImage writes a one-layer image in the
// `docker save` format (the layer tarball, the image config with its
// entrypoint, manifest.json naming the image) from a directory, with no
// daemon, and runs `ctr -n k8s.io images import` on the node's
// containerd. Build the programs of an image as static binaries
// (enginetest.BuildStatic).
//
// # Teardown
//
// Stop runs, in order, going on past every error: stop the binder;
// delete every pod (the kubelet stops them and CNI releases their
// addresses); stop the kubelet; kill and delete every containerd task and
// container; stop containerd; kill by pid what still names the scratch
// tree (the shims) and what is still in the node's cgroups; unmount
// everything below the scratch tree; remove the cgroups, the node's files
// outside the tree, the bridge with any port left on it, and the slot's
// lock; then stop the API server, then etcd, and remove the tree. Every
// process is ended by its pid, none is looked up by name.
//
// A test binary killed by its timeout tears nothing down; the kernel
// sends its components SIGKILL (Pdeathsig). Each cluster holds a lock on
// owner.lock in its scratch tree while it lives: the next Launch removes
// the trees whose lock is free (and a minute old), with whatever they
// still have mounted. And the slot's lock file names the scratch tree of
// its holder: the next node to take the slot removes what the dead node
// left outside its tree (shims, pod processes, log links, CNI results,
// bridge, cgroups).
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
// Shared value whose Stop the package's TestMain calls after m.Run, each
// test in a namespace of its own (NewNamespace, a fresh name even under
// -count). Start starts one for a single test: the form for a test that
// stops the API server while others would use it.
package kubetest
