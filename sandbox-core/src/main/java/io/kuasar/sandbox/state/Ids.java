package io.kuasar.sandbox.state;

import io.grpc.Status;

import java.util.regex.Pattern;

/**
 * Validates sandbox, container and exec ids at the edge. Ids become directory names, so anything path-like
 * ({@code /}, {@code ..}, NUL) must never get through. The grammar is containerd's identifier grammar.
 */
public final class Ids {
    private static final Pattern VALID = Pattern.compile("^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$");
    public static final int MAX_LENGTH = 76;

    private Ids() {
    }

    public static boolean isValid(String id) {
        return id != null && !id.isEmpty() && id.length() <= MAX_LENGTH && VALID.matcher(id).matches();
    }

    /** Returns the id or throws INVALID_ARGUMENT naming the kind and the reason. */
    public static String require(String kind, String id) {
        if (id == null || id.isEmpty()) {
            throw Status.INVALID_ARGUMENT.withDescription(kind + " id must not be empty").asRuntimeException();
        }
        if (id.length() > MAX_LENGTH) {
            throw Status.INVALID_ARGUMENT.withDescription(kind + " id is " + id.length()
                    + " characters; the maximum is " + MAX_LENGTH).asRuntimeException();
        }
        if (!VALID.matcher(id).matches()) {
            throw Status.INVALID_ARGUMENT.withDescription(kind + " id " + printable(id)
                    + " is invalid: use letters and digits separated by single '.', '_' or '-'"
                    + " (no '/', '..' or control characters)").asRuntimeException();
        }
        return id;
    }

    /** An id for use in messages: quoted, with control characters escaped. */
    public static String printable(String id) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : id.toCharArray()) {
            if (c < 0x20 || c == 0x7f) {
                b.append(String.format("\\x%02x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
