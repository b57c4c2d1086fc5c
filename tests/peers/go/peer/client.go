package main

// The grpc-go client: runs the interop cases against a server of
// tests/peers/interop.proto, one result line per case.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	service        = "/torii.interop.v1.TestService/"
	largeRequest   = 271828
	largeResponse  = 314159
	initialValue   = "test_initial_metadata_value"
	specialMessage = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
)

var (
	requestSizes  = []int32{27182, 8, 1828, 45904}
	responseSizes = []int32{31415, 9, 2653, 58979}
	trailingValue = string([]byte{0xab, 0xab, 0xab})
	bidi          = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
)

func timeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func payload(n int32) *Payload { return &Payload{Body: make([]byte, n)} }

func expectStatus(err error, code codes.Code, message *string) error {
	if err == nil {
		return fmt.Errorf("the call succeeded but %s was expected", code)
	}
	s, _ := status.FromError(err)
	if s.Code() != code {
		return fmt.Errorf("expected %s, got %s: %q", code, s.Code(), s.Message())
	}
	if message != nil && s.Message() != *message {
		return fmt.Errorf("expected message %q, got %q", *message, s.Message())
	}
	return nil
}

func emptyUnary(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	return conn.Invoke(ctx, service+"EmptyCall", &Empty{}, &Empty{})
}

func largeUnary(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	reply := &PayloadMessage{}
	if err := conn.Invoke(ctx, service+"UnaryCall", &SimpleRequest{ResponseSize: largeResponse, Payload: payload(largeRequest)}, reply); err != nil {
		return err
	}
	if reply.size() != largeResponse {
		return fmt.Errorf("payload of %d B", reply.size())
	}
	return nil
}

func clientStreaming(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, service+"StreamingInputCall")
	if err != nil {
		return err
	}
	var total int32
	for _, n := range requestSizes {
		if err := stream.SendMsg(&PayloadMessage{Payload: payload(n)}); err != nil {
			return err
		}
		total += n
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	reply := &StreamingInputCallResponse{}
	if err := stream.RecvMsg(reply); err != nil {
		return err
	}
	if reply.AggregatedPayloadSize != total {
		return fmt.Errorf("aggregated %d", reply.AggregatedPayloadSize)
	}
	return nil
}

// recvAll reads responses until the end of the stream; returns their sizes.
func recvAll(stream grpc.ClientStream) ([]int32, error) {
	var sizes []int32
	for {
		reply := &PayloadMessage{}
		err := stream.RecvMsg(reply)
		if err == io.EOF {
			return sizes, nil
		}
		if err != nil {
			return sizes, err
		}
		sizes = append(sizes, int32(reply.size()))
	}
}

func serverStreaming(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, service+"StreamingOutputCall")
	if err != nil {
		return err
	}
	req := &StreamingOutputCallRequest{}
	for _, n := range responseSizes {
		req.ResponseParameters = append(req.ResponseParameters, &ResponseParameters{Size: n})
	}
	if err := stream.SendMsg(req); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	sizes, err := recvAll(stream)
	if err != nil {
		return err
	}
	if fmt.Sprint(sizes) != fmt.Sprint(responseSizes) {
		return fmt.Errorf("response sizes %v", sizes)
	}
	return nil
}

func pingPong(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, bidi, service+"FullDuplexCall")
	if err != nil {
		return err
	}
	for i, n := range responseSizes {
		req := &StreamingOutputCallRequest{ResponseParameters: []*ResponseParameters{{Size: n}}, Payload: payload(requestSizes[i])}
		if err := stream.SendMsg(req); err != nil {
			return err
		}
		reply := &PayloadMessage{}
		if err := stream.RecvMsg(reply); err != nil {
			return err
		}
		if int32(reply.size()) != n {
			return fmt.Errorf("response of %d B, expected %d", reply.size(), n)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	rest, err := recvAll(stream)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%d extra responses", len(rest))
	}
	return nil
}

func emptyStream(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(3 * time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, bidi, service+"FullDuplexCall")
	if err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	sizes, err := recvAll(stream)
	if err != nil {
		return err
	}
	if len(sizes) > 0 {
		return fmt.Errorf("%d responses", len(sizes))
	}
	return nil
}

func cancelAfterBegin(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(10 * time.Second)
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, service+"StreamingInputCall")
	if err != nil {
		cancel()
		return err
	}
	cancel()
	return expectStatus(stream.RecvMsg(&StreamingInputCallResponse{}), codes.Canceled, nil)
}

func cancelAfterFirstResponse(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, bidi, service+"FullDuplexCall")
	if err != nil {
		return err
	}
	req := &StreamingOutputCallRequest{ResponseParameters: []*ResponseParameters{{Size: 31415}}, Payload: payload(27182)}
	if err := stream.SendMsg(req); err != nil {
		return err
	}
	reply := &PayloadMessage{}
	if err := stream.RecvMsg(reply); err != nil {
		return err
	}
	if reply.size() != 31415 {
		return fmt.Errorf("response of %d B", reply.size())
	}
	cancel()
	return expectStatus(stream.RecvMsg(&PayloadMessage{}), codes.Canceled, nil)
}

func timeoutOnSleepingServer(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(500 * time.Millisecond)
	defer cancel()
	stream, err := conn.NewStream(ctx, bidi, service+"FullDuplexCall")
	if err != nil {
		return expectStatus(err, codes.DeadlineExceeded, nil)
	}
	req := &StreamingOutputCallRequest{ResponseParameters: []*ResponseParameters{{Size: 1, IntervalUs: 20000000}}, Payload: payload(27182)}
	if err := stream.SendMsg(req); err != nil && err != io.EOF {
		return expectStatus(err, codes.DeadlineExceeded, nil)
	}
	return expectStatus(stream.RecvMsg(&PayloadMessage{}), codes.DeadlineExceeded, nil)
}

func checkEchoed(what string, header, trailer metadata.MD) error {
	if v := header.Get(initialKey); len(v) != 1 || v[0] != initialValue {
		return fmt.Errorf("%s: initial metadata %v", what, header)
	}
	if v := trailer.Get(trailingKey); len(v) != 1 || v[0] != trailingValue {
		return fmt.Errorf("%s: trailing metadata %v", what, trailer)
	}
	return nil
}

func customMetadata(conn *grpc.ClientConn) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, initialKey, initialValue, trailingKey, trailingValue)
	var header, trailer metadata.MD
	reply := &PayloadMessage{}
	req := &SimpleRequest{ResponseSize: largeResponse, Payload: payload(largeRequest)}
	if err := conn.Invoke(ctx, service+"UnaryCall", req, reply, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
		return err
	}
	if reply.size() != largeResponse {
		return fmt.Errorf("payload of %d B", reply.size())
	}
	if err := checkEchoed("unary", header, trailer); err != nil {
		return err
	}

	stream, err := conn.NewStream(ctx, bidi, service+"FullDuplexCall")
	if err != nil {
		return err
	}
	if err := stream.SendMsg(&StreamingOutputCallRequest{ResponseParameters: []*ResponseParameters{{Size: largeResponse}}}); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	sizes, err := recvAll(stream)
	if err != nil {
		return err
	}
	if len(sizes) != 1 || sizes[0] != largeResponse {
		return fmt.Errorf("full duplex response sizes %v", sizes)
	}
	header, err = stream.Header()
	if err != nil {
		return err
	}
	return checkEchoed("full duplex", header, stream.Trailer())
}

func statusAndMessage(conn *grpc.ClientConn, code int32, message string) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	st := &EchoStatus{Code: code, Message: message}
	err := conn.Invoke(ctx, service+"UnaryCall", &SimpleRequest{ResponseStatus: st}, &PayloadMessage{})
	if err := expectStatus(err, codes.Code(code), &message); err != nil {
		return fmt.Errorf("unary: %w", err)
	}
	stream, err := conn.NewStream(ctx, bidi, service+"FullDuplexCall")
	if err != nil {
		return err
	}
	if err := stream.SendMsg(&StreamingOutputCallRequest{ResponseStatus: st}); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	_, err = recvAll(stream)
	if err := expectStatus(err, codes.Code(code), &message); err != nil {
		return fmt.Errorf("full duplex: %w", err)
	}
	return nil
}

func statusCodes(conn *grpc.ClientConn) error {
	for code := int32(1); code <= 16; code++ {
		ctx, cancel := timeout(10 * time.Second)
		message := fmt.Sprintf("code %d \u263a", code)
		err := conn.Invoke(ctx, service+"UnaryCall", &SimpleRequest{ResponseStatus: &EchoStatus{Code: code, Message: message}}, &PayloadMessage{})
		cancel()
		if err := expectStatus(err, codes.Code(code), &message); err != nil {
			return fmt.Errorf("code %d: %w", code, err)
		}
	}
	return nil
}

func unimplemented(conn *grpc.ClientConn, method string) error {
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	return expectStatus(conn.Invoke(ctx, method, &Empty{}, &Empty{}), codes.Unimplemented, nil)
}

var cases = []struct {
	name string
	run  func(*grpc.ClientConn) error
}{
	{"empty_unary", emptyUnary},
	{"large_unary", largeUnary},
	{"client_streaming", clientStreaming},
	{"server_streaming", serverStreaming},
	{"ping_pong", pingPong},
	{"empty_stream", emptyStream},
	{"cancel_after_begin", cancelAfterBegin},
	{"cancel_after_first_response", cancelAfterFirstResponse},
	{"timeout_on_sleeping_server", timeoutOnSleepingServer},
	{"custom_metadata", customMetadata},
	{"status_code_and_message", func(c *grpc.ClientConn) error { return statusAndMessage(c, 2, "test status message") }},
	{"special_status_message", func(c *grpc.ClientConn) error { return statusAndMessage(c, 2, specialMessage) }},
	{"status_codes", statusCodes},
	{"unimplemented_method", func(c *grpc.ClientConn) error { return unimplemented(c, service+"UnimplementedCall") }},
	{"unimplemented_service", func(c *grpc.ClientConn) error {
		return unimplemented(c, "/torii.interop.v1.UnimplementedService/UnimplementedCall")
	}},
}

// runCases runs the named cases (all when empty); returns how many failed.
func runCases(conn *grpc.ClientConn, names []string) int {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	failed := 0
	for _, c := range cases {
		if len(names) > 0 && !want[c.name] {
			continue
		}
		started := time.Now()
		err := c.run(conn)
		line := "PASS"
		if err != nil {
			failed++
			why := err.Error()
			var st interface{ GRPCStatus() *status.Status }
			if errors.As(err, &st) && !strings.Contains(why, "expected") {
				why = fmt.Sprintf("%s: %q", st.GRPCStatus().Code(), st.GRPCStatus().Message())
			}
			line = "FAIL " + strings.ReplaceAll(why, "\n", "\\n")
		}
		fmt.Printf("CASE %s %s (%d ms)\n", c.name, line, time.Since(started).Milliseconds())
	}
	return failed
}
