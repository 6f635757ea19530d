package io.kuasar.ctl;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.sandbox.v1.ControllerStatusResponse;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.sandbox.task.TaskStore;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SortedMap;

/**
 * What {@code kuasar-ctl ps} and {@code inspect} show: every sandbox in each daemon's state directory (read with
 * sandbox-core's own {@link StateStore#peek} and {@link TaskStore#peek}), with its state as the daemon's Sandbox API
 * {@code Status} answers it; a daemon that is down is reported as such, and its sandboxes with what their records say.
 */
final class Overview {
    static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    /** One daemon: {@code down} is null when it answered, else why not; {@code present} if its socket or dir exists. */
    record Daemon(Sandboxers.Sandboxer sandboxer, boolean present, String down) {
    }

    /** One sandbox; {@code error} says why the daemon's answer is missing (then the rest is from its record). */
    record Row(String id, Sandboxers.Sandboxer sandboxer, String state, long pid, Instant created, Instant exited,
               String address, List<String> containers, String error) {
    }

    record Result(List<Daemon> daemons, List<Row> rows) {
    }

    private Overview() {
    }

    static Result gather(List<Sandboxers.Sandboxer> sandboxers, Duration timeout) throws IOException {
        List<Daemon> daemons = new ArrayList<>();
        List<Row> rows = new ArrayList<>();
        for (Sandboxers.Sandboxer s : sandboxers) {
            boolean present = Files.exists(s.socket()) || Files.isDirectory(s.dir());
            String down = present ? SandboxApi.probe(s.socket(), timeout) : "not running (no " + s.socket() + ")";
            daemons.add(new Daemon(s, present, down));
            SortedMap<String, SandboxRecord> records = StateStore.peek(s.dir());
            if (records.isEmpty()) {
                continue;
            }
            List<TaskRecord> tasks = TaskStore.peek(s.dir());
            try (SandboxApi api = down == null ? new SandboxApi(s.socket(), timeout) : null) {
                for (Map.Entry<String, SandboxRecord> e : records.entrySet()) {
                    List<String> containers = tasks.stream().filter(t -> e.getKey().equals(t.sandboxId()))
                            .map(TaskRecord::id).sorted().toList();
                    rows.add(row(e.getKey(), e.getValue(), s, api, down, containers));
                }
            }
        }
        return new Result(daemons, rows);
    }

    private static Row row(String id, SandboxRecord r, Sandboxers.Sandboxer s, SandboxApi api, String down,
                           List<String> containers) {
        if (api != null) {
            try {
                ControllerStatusResponse st = api.status(id, false);
                return new Row(id, s, st.getState(), st.getPid(), instant(st.getCreatedAt()),
                        instant(st.getExitedAt()), st.getAddress(), containers, null);
            } catch (StatusRuntimeException e) {
                down = e.getStatus().getCode() == Status.Code.NOT_FOUND ? "the daemon does not know it (yet)"
                        : SandboxApi.describe(e);
            }
        }
        if (r == null) {
            return new Row(id, s, "unknown", 0, null, null, "", containers, down);
        }
        return new Row(id, s, "unknown", r.pid(), nanos(r.createdAt()), nanos(r.exitedAt()),
                r.taskAddress() == null ? "" : r.taskAddress(), containers, down);
    }

    static Instant instant(com.google.protobuf.Timestamp t) {
        return t.getSeconds() == 0 && t.getNanos() == 0 ? null : Instant.ofEpochSecond(t.getSeconds(), t.getNanos());
    }

    static Instant nanos(long epochNanos) {
        return epochNanos == 0 ? null : Instant.ofEpochSecond(0, epochNanos);
    }

    /** "SANDBOX_READY" as "ready". */
    static String shortState(String state) {
        return state.startsWith("SANDBOX_") ? state.substring(8).toLowerCase() : state.toLowerCase();
    }

    /** An age as kubectl shows it: 42s, 5m, 3h, 2d. */
    static String age(Instant then, Instant now) {
        if (then == null) {
            return "-";
        }
        long s = Math.max(0, Duration.between(then, now).toSeconds());
        return s < 120 ? s + "s" : s < 7200 ? s / 60 + "m" : s < 172800 ? s / 3600 + "h" : s / 86400 + "d";
    }

    static String table(Result res, Instant now, boolean noTrunc) {
        List<String[]> lines = new ArrayList<>();
        lines.add(new String[]{"SANDBOX", "SANDBOXER", "STATE", "PID", "CONTAINERS", "CREATED", "ADDRESS"});
        for (Row r : res.rows()) {
            lines.add(new String[]{noTrunc || r.id().length() <= 13 ? r.id() : r.id().substring(0, 13),
                    r.sandboxer().name(), r.error() == null ? shortState(r.state()) : "unknown", r.pid() == 0 ? "-"
                    : Long.toString(r.pid()), Integer.toString(r.containers().size()), age(r.created(), now),
                    r.address().isEmpty() ? "-" : r.address()});
        }
        int[] width = new int[lines.getFirst().length];
        for (String[] l : lines) {
            for (int i = 0; i < l.length; i++) {
                width[i] = Math.max(width[i], l[i].length());
            }
        }
        StringBuilder out = new StringBuilder();
        for (String[] l : lines) {
            StringBuilder line = new StringBuilder();
            for (int i = 0; i < l.length; i++) {
                line.append(i == l.length - 1 ? l[i] : String.format("%-" + (width[i] + 3) + "s", l[i]));
            }
            out.append(line.toString().stripTrailing()).append('\n');
        }
        for (Daemon d : res.daemons()) {
            if (d.present() && d.down() != null) {
                out.append(d.sandboxer().name()).append(": down: ").append(d.down()).append('\n');
            }
        }
        for (Row r : res.rows()) {
            if (r.error() != null && res.daemons().stream().noneMatch(d -> d.sandboxer() == r.sandboxer()
                    && d.down() != null)) {
                out.append(r.id()).append(": ").append(r.error()).append('\n');
            }
        }
        return out.toString();
    }

    static String json(Result res) throws IOException {
        ObjectNode root = JSON.createObjectNode();
        ArrayNode daemons = root.putArray("sandboxers");
        for (Daemon d : res.daemons()) {
            ObjectNode n = daemons.addObject();
            n.put("name", d.sandboxer().name()).put("kind", d.sandboxer().kind())
                    .put("socket", d.sandboxer().socket().toString()).put("dir", d.sandboxer().dir().toString())
                    .put("present", d.present()).put("up", d.down() == null);
            if (d.down() != null) {
                n.put("error", d.down());
            }
        }
        ArrayNode rows = root.putArray("sandboxes");
        for (Row r : res.rows()) {
            ObjectNode n = rows.addObject();
            n.put("id", r.id()).put("sandboxer", r.sandboxer().name()).put("kind", r.sandboxer().kind())
                    .put("state", r.state()).put("pid", r.pid());
            n.put("createdAt", r.created() == null ? null : r.created().toString());
            n.put("exitedAt", r.exited() == null ? null : r.exited().toString());
            n.put("address", r.address());
            ArrayNode c = n.putArray("containers");
            r.containers().forEach(c::add);
            if (r.error() != null) {
                n.put("error", r.error());
            }
        }
        return JSON.writeValueAsString(root) + "\n";
    }

    /** {@code inspect}: the daemon's full Status (verbose) of one sandbox, with where it lives and its containers. */
    static String inspect(Resolver.Found f, Duration timeout) throws IOException {
        Sandboxers.Sandboxer s = f.sandboxer();
        ObjectNode root = JSON.createObjectNode();
        root.put("id", f.id()).put("sandboxer", s.name()).put("kind", s.kind()).put("socket", s.socket().toString())
                .put("sandboxDir", s.dir().resolve("sandboxes").resolve(f.id()).toString());
        ArrayNode c = root.putArray("containers");
        TaskStore.peek(s.dir()).stream().filter(t -> f.id().equals(t.sandboxId())).map(TaskRecord::id).sorted()
                .forEach(c::add);
        String down = SandboxApi.probe(s.socket(), timeout);
        if (down == null) {
            try (SandboxApi api = new SandboxApi(s.socket(), timeout)) {
                ControllerStatusResponse st = api.status(f.id(), true);
                // an Any of a type this tool does not know is shown by its type URL only
                ControllerStatusResponse shown = st.hasExtra() ? st.toBuilder().clearExtra().build() : st;
                ObjectNode status = (ObjectNode) JSON.readTree(com.google.protobuf.util.JsonFormat.printer()
                        .preservingProtoFieldNames().print(shown));
                if (st.hasExtra()) {
                    status.putObject("extra").put("type_url", st.getExtra().getTypeUrl());
                }
                root.set("status", status);
            } catch (StatusRuntimeException e) {
                down = SandboxApi.describe(e);
            }
        }
        if (down != null) {
            root.putNull("status");
            root.put("error", s.name() + ": " + down);
        }
        return JSON.writeValueAsString(root) + "\n";
    }
}
