package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// AskHealthCheck asks node n's health-check node port from the client, as
// a cloud load balancer does, and returns the status code and the local
// endpoints svcproxy counted (kube-proxy's JSON answer), within timeout.
func (s *State) AskHealthCheck(ctx context.Context, n Node, port int, timeout time.Duration) (status, localEndpoints int, err error) {
	url := "http://" + net.JoinHostPort(n.IP.String(), strconv.Itoa(port)) + "/"
	status, body, err := nsrun.Get(ctx, s.ClientNetns(), url, timeout)
	if err != nil {
		return 0, 0, err
	}
	var answer struct{ LocalEndpoints int }
	if err := json.Unmarshal(body, &answer); err != nil {
		return status, 0, fmt.Errorf("%s answered %d: %w", url, status, err)
	}
	return status, answer.LocalEndpoints, nil
}
