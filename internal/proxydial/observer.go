package proxydial

// Results of a dial through one node, the "result" label of
// edge_proxy_dials_total.
const (
	// ResultOK: the proxy accepted the connection.
	ResultOK = "ok"
	// ResultError: the dial or the proxy handshake failed.
	ResultError = "error"
	// ResultNoResponse: the proxy accepted the connection, but it closed or
	// stayed silent before the first byte of the destination arrived (a
	// down destination behind ss, trojan or vmess; a wrong ss password).
	ResultNoResponse = "no_response"
)

// Failure is one failed dial or handshake through a node, as reported to
// the control plane (ProxyFailure). Error never holds node secrets.
type Failure struct {
	Node   string
	Prefix string
	Error  string
}

// Observer receives what dialers see. Every method is called on the dial
// path and must return at once (count, or hand off to a buffered channel).
type Observer interface {
	// Dialed counts one dial outcome through node (ResultOK, ResultError,
	// ResultNoResponse).
	Dialed(node, result string)
	// FailedOver counts one move of a connection from a failed node to
	// the next one.
	FailedOver()
	// Failed reports one failure, for the control plane.
	Failed(f Failure)
}

// nopObserver is used when no Observer is given.
type nopObserver struct{}

func (nopObserver) Dialed(string, string) {}
func (nopObserver) FailedOver()           {}
func (nopObserver) Failed(Failure)        {}
