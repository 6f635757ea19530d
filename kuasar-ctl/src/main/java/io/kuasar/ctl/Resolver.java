package io.kuasar.ctl;

import io.kuasar.sandbox.state.StateStore;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** A sandbox named by its id or a unique prefix of it, among the sandboxes of one or more state directories. */
final class Resolver {
    /** A sandbox found: the daemon whose state directory holds it, and its full id. */
    record Found(Sandboxers.Sandboxer sandboxer, String id) {
    }

    private Resolver() {
    }

    /** The one sandbox {@code idOrPrefix} names among those of {@code sandboxers}; a clear error otherwise. */
    static Found resolve(List<Sandboxers.Sandboxer> sandboxers, String idOrPrefix) {
        if (idOrPrefix.isEmpty()) {
            throw new CtlException("an empty sandbox id");
        }
        List<Found> exact = new ArrayList<>();
        List<Found> prefixed = new ArrayList<>();
        int total = 0;
        for (Sandboxers.Sandboxer s : sandboxers) {
            for (String id : ids(s.dir())) {
                total++;
                if (id.equals(idOrPrefix)) {
                    exact.add(new Found(s, id));
                } else if (id.startsWith(idOrPrefix)) {
                    prefixed.add(new Found(s, id));
                }
            }
        }
        if (exact.size() == 1) {
            return exact.getFirst();
        }
        List<Found> matches = new ArrayList<>(exact);
        matches.addAll(prefixed);
        if (matches.size() == 1) {
            return matches.getFirst();
        }
        String where = sandboxers.size() == 1 ? sandboxers.getFirst().dir() + "/sandboxes"
                : "the state directories of " + String.join(", ", sandboxers.stream().map(Sandboxers.Sandboxer::name)
                .toList());
        if (matches.isEmpty()) {
            throw new CtlException("no sandbox " + idOrPrefix + " (nor one whose id starts with it) in " + where + " ("
                    + total + " sandbox" + (total == 1 ? "" : "es") + " there)");
        }
        StringBuilder msg = new StringBuilder("the prefix " + idOrPrefix + " is ambiguous: it matches "
                + matches.size() + " sandboxes:");
        for (Found f : matches) {
            msg.append("\n  ").append(f.id()).append(sandboxers.size() > 1 ? " (" + f.sandboxer().name() + ")" : "");
        }
        throw new CtlException(msg.toString());
    }

    static List<String> ids(Path dir) {
        try {
            return new ArrayList<>(StateStore.peek(dir).keySet());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list " + dir + ": " + e.getMessage(), e);
        }
    }
}
