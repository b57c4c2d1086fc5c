package main

// The grpc-go server of tests/peers/interop.proto (its service description
// written by hand, as generated code would), and a plain x/net/http2 h2c
// server of large bodies for the download tests.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	initialKey  = "x-echo-initial"
	trailingKey = "x-echo-trailing-bin"
)

// echoMetadata returns the initial and trailing metadata the server must
// send back: the request's x-echo-initial and x-echo-trailing-bin.
func echoMetadata(ctx context.Context) (metadata.MD, metadata.MD) {
	in, _ := metadata.FromIncomingContext(ctx)
	header, trailer := metadata.MD{}, metadata.MD{}
	if v := in.Get(initialKey); len(v) > 0 {
		header.Set(initialKey, v...)
	}
	if v := in.Get(trailingKey); len(v) > 0 {
		trailer.Set(trailingKey, v...)
	}
	return header, trailer
}

func statusError(s *EchoStatus) error {
	if s == nil || s.Code == 0 {
		return nil
	}
	return status.Error(codes.Code(s.Code), s.Message)
}

func zeros(n int32) *PayloadMessage {
	return &PayloadMessage{Payload: &Payload{Body: make([]byte, n)}}
}

// sleep waits, but no longer than the call lives.
func sleep(ctx context.Context, us int32) error {
	if us <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(us) * time.Microsecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func unaryHandler(newReq func() message, call func(context.Context, message) (message, error)) func(interface{}, context.Context, func(interface{}) error, grpc.UnaryServerInterceptor) (interface{}, error) {
	return func(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
		req := newReq()
		if err := dec(req); err != nil {
			return nil, err
		}
		header, trailer := echoMetadata(ctx)
		if len(header) > 0 {
			if err := grpc.SendHeader(ctx, header); err != nil {
				return nil, err
			}
		}
		if len(trailer) > 0 {
			if err := grpc.SetTrailer(ctx, trailer); err != nil {
				return nil, err
			}
		}
		return call(ctx, req)
	}
}

func streamHandler(call func(grpc.ServerStream) error) func(interface{}, grpc.ServerStream) error {
	return func(_ interface{}, stream grpc.ServerStream) error {
		header, trailer := echoMetadata(stream.Context())
		if len(header) > 0 {
			if err := stream.SendHeader(header); err != nil {
				return err
			}
		}
		stream.SetTrailer(trailer)
		return call(stream)
	}
}

func sendResponses(stream grpc.ServerStream, req *StreamingOutputCallRequest) error {
	for _, p := range req.ResponseParameters {
		if err := sleep(stream.Context(), p.IntervalUs); err != nil {
			return err
		}
		if err := stream.SendMsg(zeros(p.Size)); err != nil {
			return err
		}
	}
	return statusError(req.ResponseStatus)
}

var testService = grpc.ServiceDesc{
	ServiceName: "torii.interop.v1.TestService",
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		{
			MethodName: "EmptyCall",
			Handler: unaryHandler(func() message { return &Empty{} }, func(context.Context, message) (message, error) {
				return &Empty{}, nil
			}),
		},
		{
			MethodName: "UnaryCall",
			Handler: unaryHandler(func() message { return &SimpleRequest{} }, func(_ context.Context, m message) (message, error) {
				req := m.(*SimpleRequest)
				if err := statusError(req.ResponseStatus); err != nil {
					return nil, err
				}
				return zeros(req.ResponseSize), nil
			}),
		},
	},
	Streams: []grpc.StreamDesc{
		{
			StreamName:    "StreamingOutputCall",
			ServerStreams: true,
			Handler: streamHandler(func(stream grpc.ServerStream) error {
				req := &StreamingOutputCallRequest{}
				if err := stream.RecvMsg(req); err != nil {
					return err
				}
				return sendResponses(stream, req)
			}),
		},
		{
			StreamName:    "StreamingInputCall",
			ClientStreams: true,
			Handler: streamHandler(func(stream grpc.ServerStream) error {
				total := 0
				for {
					req := &PayloadMessage{}
					err := stream.RecvMsg(req)
					if err == io.EOF {
						return stream.SendMsg(&StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
					}
					if err != nil {
						return err
					}
					total += req.size()
				}
			}),
		},
		{
			StreamName:    "FullDuplexCall",
			ServerStreams: true,
			ClientStreams: true,
			Handler: streamHandler(func(stream grpc.ServerStream) error {
				for {
					req := &StreamingOutputCallRequest{}
					err := stream.RecvMsg(req)
					if err == io.EOF {
						return nil
					}
					if err != nil {
						return err
					}
					if err := sendResponses(stream, req); err != nil {
						return err
					}
				}
			}),
		},
	},
	Metadata: "interop.proto",
}

func serveGrpc(opts []grpc.ServerOption) error {
	// No keepalive options: grpc-go's default enforcement (pings no more
	// often than every 5 minutes, none without streams) is the point.
	server := grpc.NewServer(opts...)
	server.RegisterService(&testService, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("peer listening address=%s\n", ln.Addr())
	return server.Serve(ln)
}

// serveBytes: GET /bytes?n=N answers N bytes (a repeating pattern, so a
// client can check every byte) with a content-length, over h2c (and
// HTTP/1.1).
func serveBytes() error {
	mux := http.NewServeMux()
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			http.Error(w, "n must be a byte count", http.StatusBadRequest)
			return
		}
		w.Header().Set("content-type", "application/octet-stream")
		w.Header().Set("content-length", strconv.Itoa(n))
		chunk := make([]byte, 251*128)
		for i := range chunk {
			chunk[i] = pattern(i)
		}
		for n > 0 {
			k := len(chunk)
			if n < k {
				k = n
			}
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("peer listening address=%s\n", ln.Addr())
	server := &http.Server{Handler: h2c.NewHandler(mux, &http2.Server{})}
	return server.Serve(ln)
}

// pattern is byte i of every /bytes body: i mod 251 (chunks are whole periods).
func pattern(i int) byte { return byte(i % 251) }
