package io.kuasar.ctl;

/** A failure kuasar-ctl explains in one line (no stack trace). */
final class CtlException extends RuntimeException {
    CtlException(String message) {
        super(message);
    }

    CtlException(String message, Throwable cause) {
        super(message, cause);
    }
}
