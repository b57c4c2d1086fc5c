package main

// The messages of tests/peers/interop.proto, encoded by hand in the protobuf
// wire format (no code generator needed to build this peer offline), and a
// gRPC codec named "proto" that replaces grpc-go's default one.

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
)

type message interface {
	marshal() []byte
	unmarshal(data []byte) error
}

type codec struct{}

func (codec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(message)
	if !ok {
		return nil, fmt.Errorf("codec: %T is not an interop message", v)
	}
	return m.marshal(), nil
}

func (codec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(message)
	if !ok {
		return fmt.Errorf("codec: %T is not an interop message", v)
	}
	return m.unmarshal(data)
}

func (codec) Name() string { return "proto" }

func init() { encoding.RegisterCodec(codec{}) }

// --- wire format --------------------------------------------------------------

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendIntField(b []byte, num int, v int32) []byte {
	if v == 0 {
		return b
	}
	b = appendVarint(b, uint64(num)<<3)
	return appendVarint(b, uint64(int64(v)))
}

func appendBytesField(b []byte, num int, v []byte) []byte {
	b = appendVarint(b, uint64(num)<<3|2)
	b = appendVarint(b, uint64(len(v)))
	return append(b, v...)
}

var errTruncated = errors.New("truncated message")

func readVarint(data []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(data) && i < 10; i++ {
		v |= uint64(data[i]&0x7f) << (7 * uint(i))
		if data[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errTruncated
}

// fields calls f for each field: its number, and the varint value or the
// length-delimited bytes. Other wire types are skipped.
func fields(data []byte, f func(num int, v uint64, b []byte) error) error {
	for len(data) > 0 {
		key, n, err := readVarint(data)
		if err != nil {
			return err
		}
		data = data[n:]
		num := int(key >> 3)
		switch key & 7 {
		case 0:
			v, n, err := readVarint(data)
			if err != nil {
				return err
			}
			data = data[n:]
			if err := f(num, v, nil); err != nil {
				return err
			}
		case 1:
			if len(data) < 8 {
				return errTruncated
			}
			data = data[8:]
		case 2:
			l, n, err := readVarint(data)
			if err != nil || uint64(len(data)-n) < l {
				return errTruncated
			}
			if err := f(num, 0, data[n:n+int(l)]); err != nil {
				return err
			}
			data = data[n+int(l):]
		case 5:
			if len(data) < 4 {
				return errTruncated
			}
			data = data[4:]
		default:
			return fmt.Errorf("wire type %d not supported", key&7)
		}
	}
	return nil
}

// --- messages -----------------------------------------------------------------

type Empty struct{}

func (*Empty) marshal() []byte { return nil }
func (*Empty) unmarshal(data []byte) error {
	return fields(data, func(int, uint64, []byte) error { return nil })
}

type Payload struct{ Body []byte }

func (m *Payload) marshal() []byte {
	if len(m.Body) == 0 {
		return nil
	}
	return appendBytesField(nil, 1, m.Body)
}

func (m *Payload) unmarshal(data []byte) error {
	return fields(data, func(num int, _ uint64, b []byte) error {
		if num == 1 {
			m.Body = append([]byte(nil), b...)
		}
		return nil
	})
}

type EchoStatus struct {
	Code    int32
	Message string
}

func (m *EchoStatus) marshal() []byte {
	b := appendIntField(nil, 1, m.Code)
	if m.Message != "" {
		b = appendBytesField(b, 2, []byte(m.Message))
	}
	return b
}

func (m *EchoStatus) unmarshal(data []byte) error {
	return fields(data, func(num int, v uint64, b []byte) error {
		switch num {
		case 1:
			m.Code = int32(v)
		case 2:
			m.Message = string(b)
		}
		return nil
	})
}

type SimpleRequest struct {
	ResponseSize   int32
	Payload        *Payload
	ResponseStatus *EchoStatus
}

func (m *SimpleRequest) marshal() []byte {
	b := appendIntField(nil, 1, m.ResponseSize)
	if m.Payload != nil {
		b = appendBytesField(b, 2, m.Payload.marshal())
	}
	if m.ResponseStatus != nil {
		b = appendBytesField(b, 3, m.ResponseStatus.marshal())
	}
	return b
}

func (m *SimpleRequest) unmarshal(data []byte) error {
	return fields(data, func(num int, v uint64, b []byte) error {
		switch num {
		case 1:
			m.ResponseSize = int32(v)
		case 2:
			m.Payload = &Payload{}
			return m.Payload.unmarshal(b)
		case 3:
			m.ResponseStatus = &EchoStatus{}
			return m.ResponseStatus.unmarshal(b)
		}
		return nil
	})
}

// SimpleResponse, StreamingInputCallRequest and StreamingOutputCallResponse
// are all { Payload payload = 1; }.
type PayloadMessage struct{ Payload *Payload }

func (m *PayloadMessage) marshal() []byte {
	if m.Payload == nil {
		return nil
	}
	return appendBytesField(nil, 1, m.Payload.marshal())
}

func (m *PayloadMessage) unmarshal(data []byte) error {
	return fields(data, func(num int, _ uint64, b []byte) error {
		if num == 1 {
			m.Payload = &Payload{}
			return m.Payload.unmarshal(b)
		}
		return nil
	})
}

func (m *PayloadMessage) size() int {
	if m.Payload == nil {
		return 0
	}
	return len(m.Payload.Body)
}

type StreamingInputCallResponse struct{ AggregatedPayloadSize int32 }

func (m *StreamingInputCallResponse) marshal() []byte {
	return appendIntField(nil, 1, m.AggregatedPayloadSize)
}

func (m *StreamingInputCallResponse) unmarshal(data []byte) error {
	return fields(data, func(num int, v uint64, _ []byte) error {
		if num == 1 {
			m.AggregatedPayloadSize = int32(v)
		}
		return nil
	})
}

type ResponseParameters struct {
	Size       int32
	IntervalUs int32
}

func (m *ResponseParameters) marshal() []byte {
	return appendIntField(appendIntField(nil, 1, m.Size), 2, m.IntervalUs)
}

func (m *ResponseParameters) unmarshal(data []byte) error {
	return fields(data, func(num int, v uint64, _ []byte) error {
		switch num {
		case 1:
			m.Size = int32(v)
		case 2:
			m.IntervalUs = int32(v)
		}
		return nil
	})
}

type StreamingOutputCallRequest struct {
	ResponseParameters []*ResponseParameters
	Payload            *Payload
	ResponseStatus     *EchoStatus
}

func (m *StreamingOutputCallRequest) marshal() []byte {
	var b []byte
	for _, p := range m.ResponseParameters {
		b = appendBytesField(b, 1, p.marshal())
	}
	if m.Payload != nil {
		b = appendBytesField(b, 2, m.Payload.marshal())
	}
	if m.ResponseStatus != nil {
		b = appendBytesField(b, 3, m.ResponseStatus.marshal())
	}
	return b
}

func (m *StreamingOutputCallRequest) unmarshal(data []byte) error {
	return fields(data, func(num int, _ uint64, b []byte) error {
		switch num {
		case 1:
			p := &ResponseParameters{}
			m.ResponseParameters = append(m.ResponseParameters, p)
			return p.unmarshal(b)
		case 2:
			m.Payload = &Payload{}
			return m.Payload.unmarshal(b)
		case 3:
			m.ResponseStatus = &EchoStatus{}
			return m.ResponseStatus.unmarshal(b)
		}
		return nil
	})
}
