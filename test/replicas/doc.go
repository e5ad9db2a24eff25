// Package replicas runs gateway replicas end to end (issue 13,
// acceptance 2 and 3): three real `gateway serve` binaries in replica mode
// (--replica-advertise) sharing one real Postgres (pkg/store/pgtest), each
// with a state directory of its own, driving real pods on a real one-node
// cluster (pkg/driver/kubetest) with the real supervisor binary.
//
// Every replica serves its operator API on TCP with TLS and the operator
// token (--admin-tcp; peers forward to each other there), its health and
// metrics (--http-addr) and its own session listener (--session-addr) on
// loopback. In front of the three session listeners, serviceStandIn stands
// in for the Kubernetes Service (a layer-4 round-robin balancer written in
// the test: this cluster runs no kube-proxy), on the bridge's host address
// where pods reach the host; the pods' --kubernetes-gateway names it.
//
// One cluster and one Postgres serve the package (its TestMain stops
// both); each test has a namespace, a database schema, three replicas and
// a stand-in of its own. The tests run one at a time: one restarts
// Postgres. Under CI=true a missing Postgres or missing Kubernetes
// binaries fail the tests, never skip them.
//
// What the tests read: each replica's /metrics (sandkey_leader) and
// /readyz, its JSON log ("session accepted" lines date each registration;
// every token description it logs feeds the check that no generation has
// two jtis), and the database itself (generations, delivered_gen,
// session_holders, replicas).
//
// TestSoakReplicasNoTokenIsLostUnderChaos is `make soak SOAK_MODE=replicas`
// (see soak_test.go): it runs only when SANDKEY_SOAK_MODE=replicas.
package replicas
