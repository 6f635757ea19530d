package io.kuasar.sandbox.tracing;

import java.util.HexFormat;

/**
 * A W3C Trace Context {@code traceparent} value ({@code 00-<trace-id>-<parent-id>-<flags>}), as containerd's
 * otelttrpc and otelgrpc interceptors send it in call metadata. Malformed values are ignored (a new trace starts),
 * as the W3C spec asks of a receiver.
 */
public record TraceParent(String traceId, String spanId, boolean sampled) {
    /** The metadata key, in gRPC headers and ttrpc metadata alike. */
    public static final String KEY = "traceparent";

    /** The parsed value, or null when it is absent or not a valid version-00 (or later) traceparent. */
    public static TraceParent parse(String value) {
        if (value == null) {
            return null;
        }
        String v = value.trim();
        // version 00 is exactly 55 chars; later versions may append fields after a '-'
        if (v.length() < 55 || (v.length() > 55 && v.charAt(55) != '-')) {
            return null;
        }
        String version = v.substring(0, 2);
        String trace = v.substring(3, 35);
        String span = v.substring(36, 52);
        String flags = v.substring(53, 55);
        if (v.charAt(2) != '-' || v.charAt(35) != '-' || v.charAt(52) != '-'
                || !lowerHex(version) || version.equals("ff") || (version.equals("00") && v.length() != 55)
                || !lowerHex(trace) || !lowerHex(span) || !lowerHex(flags)
                || allZero(trace) || allZero(span)) {
            return null;
        }
        return new TraceParent(trace, span, (HexFormat.fromHexDigits(flags) & 1) == 1);
    }

    public String format() {
        return "00-" + traceId + "-" + spanId + (sampled ? "-01" : "-00");
    }

    private static boolean lowerHex(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f')) {
                return false;
            }
        }
        return true;
    }

    private static boolean allZero(String s) {
        for (int i = 0; i < s.length(); i++) {
            if (s.charAt(i) != '0') {
                return false;
            }
        }
        return true;
    }
}
