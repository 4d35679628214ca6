package testnet

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Response is an HTTP answer read in full.
type Response struct {
	Code   int
	Header http.Header
	Body   string
}

// Get sends GET http://addr/path from inside ns, on a connection dialled
// there (an http.Client would dial from another goroutine, outside ns).
func (ns *NS) Get(addr netip.AddrPort, path string) (Response, error) {
	var r Response
	err := ns.Do(func() error {
		conn, err := net.DialTimeout("tcp", addr.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		req, err := http.NewRequest("GET", fmt.Sprintf("http://%s%s", addr, path), nil)
		if err != nil {
			return err
		}
		if err := req.Write(conn); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		r = Response{Code: resp.StatusCode, Header: resp.Header, Body: string(body)}
		return err
	})
	return r, err
}
