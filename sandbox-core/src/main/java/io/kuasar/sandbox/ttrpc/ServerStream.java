package io.kuasar.sandbox.ttrpc;

import com.google.protobuf.Message;

import java.io.IOException;

/** The server's side of a streaming call: receive the client's messages, send any number back. */
public interface ServerStream {
    /** The next message from the client, or null when the client has closed its side. */
    byte[] recv() throws IOException, InterruptedException;

    void send(Message message) throws IOException;
}
