"""``h2``'s server connection with a short path for what a response sends: HEADERS (the head, the
trailers) and DATA on a stream the client opened.

``h2.H2Connection.send_headers`` and ``send_data`` build frame objects, flag sets, validation
flags and debug log records per call before the bytes go out; on a proxied gRPC call (a head,
one message, trailers) that was a fifth of the downstream connection's CPU. The methods here
take the same steps of ``h2``'s state machines — the connection's and the stream's inputs, the
flow-control windows, ``END_STREAM`` — and write the frames' bytes themselves, so ``h2`` still
knows every stream's state and window (and refuses what it refused before: a closed stream, a
window too small, trailers without ``END_STREAM``). Anything unusual (a stream ``h2`` does not
know) takes ``h2``'s own path.
"""

from __future__ import annotations

from h2.connection import ConnectionInputs, H2Connection
from h2.exceptions import FlowControlError, FrameTooLargeError, ProtocolError
from h2.stream import StreamInputs

from edgeway.http.h2_frames import END_HEADERS, END_STREAM, FrameType, frame

__all__ = ["ServerConnection"]

Headers = list[tuple[bytes, bytes]]


class ServerConnection(H2Connection):
    def send_headers_fast(self, stream_id: int, headers: Headers, end_stream: bool = False) -> None:
        """``send_headers`` for a response head or trailers; headers lower-case bytes."""
        stream = self.streams.get(stream_id)
        if stream is None or not headers:
            self.send_headers(stream_id, headers, end_stream=end_stream)
            return
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        machine = stream.state_machine
        first = headers[0]
        if first[0] == b":status" and first[1][:1] == b"1":
            if end_stream:
                raise ProtocolError("Cannot set END_STREAM on informational responses.")
            machine.process_input(StreamInputs.SEND_INFORMATIONAL_HEADERS)
        else:
            machine.process_input(StreamInputs.SEND_HEADERS)
        block = self.encoder.encode(headers)
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
        elif machine.trailers_sent:
            raise ProtocolError("Trailers must have END_STREAM set.")
        flags = END_STREAM if end_stream else 0
        size = self.max_outbound_frame_size
        if len(block) <= size:
            self._data_to_send += frame(FrameType.HEADERS, flags | END_HEADERS, stream_id, block)
            return
        chunks = [block[i : i + size] for i in range(0, len(block), size)]
        out = [frame(FrameType.HEADERS, flags, stream_id, chunks[0])]
        out += [frame(FrameType.CONTINUATION, 0, stream_id, chunk) for chunk in chunks[1:-1]]
        out.append(frame(FrameType.CONTINUATION, END_HEADERS, stream_id, chunks[-1]))
        self._data_to_send += b"".join(out)

    def send_data_fast(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """``send_data`` without padding."""
        stream = self.streams.get(stream_id)
        if stream is None:
            self.send_data(stream_id, data, end_stream=end_stream)
            return
        size = len(data)
        if size > 0 and size > min(stream.outbound_flow_control_window, self.outbound_flow_control_window):
            raise FlowControlError(f"Cannot send {size} bytes, flow control window is too small")
        if size > self.max_outbound_frame_size:
            raise FrameTooLargeError(f"Cannot send frame size {size}")
        self.state_machine.process_input(ConnectionInputs.SEND_DATA)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_DATA)
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        self._data_to_send += frame(FrameType.DATA, END_STREAM if end_stream else 0, stream_id, data)
