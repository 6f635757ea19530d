package io.kuasar.sandbox.ttrpc;

import java.time.Instant;
import java.util.List;
import java.util.Map;

/** What a handler knows about the call: its metadata (a multimap) and its deadline, if the client set one. */
public record CallContext(String service, String method, Map<String, List<String>> metadata, Instant deadline) {
    /** containerd puts the namespace of a call here. */
    public static final String NAMESPACE_KEY = "containerd-namespace-ttrpc";

    public String first(String key) {
        List<String> values = metadata.get(key);
        return values == null || values.isEmpty() ? null : values.getFirst();
    }

    public String namespaceOr(String fallback) {
        String ns = first(NAMESPACE_KEY);
        return ns == null || ns.isEmpty() ? fallback : ns;
    }
}
