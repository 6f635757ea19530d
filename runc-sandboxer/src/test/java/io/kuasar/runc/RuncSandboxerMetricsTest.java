package io.kuasar.runc;

import com.google.protobuf.Any;
import io.kuasar.api.cgroups.v2.CPUStat;
import io.kuasar.api.cgroups.v2.MemoryStat;
import io.kuasar.api.cgroups.v2.Metrics;
import io.kuasar.api.cgroups.v2.PidsStat;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.api.task.v3.CreateTaskResponse;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.types.Metric;
import io.kuasar.api.types.task.ProcessInfo;
import io.kuasar.sandbox.cgroup.CgroupStats;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The sandbox metric is the sum of its containers' cgroup metrics, in their version. The containers are stand-ins
 * (real ones need runc: the e2e tests) whose Task.Stats answer is cgroup v2 metrics, as on a v2-only host; they are
 * created through the real Task service over ttrpc.
 */
class RuncSandboxerMetricsTest {
    @TempDir
    Path dir;

    /** A container of sandbox "sb" that only answers Stats. */
    private record StatsOnly(Any stats) implements Container {
        public String sandboxId() { return "sb"; }
        public int initPid() { return 4242; }
        public CompletableFuture<ExitStatus> initExit() { return new CompletableFuture<>(); }
        public void start() { }
        public Exec exec(ExecProcessRequest request) { throw new UnsupportedOperationException(); }
        public void kill(int signal, boolean all) { }
        public void delete() { }
        public List<ProcessInfo> pids() { return List.of(); }
        public void update(Any resources) { }
        public void pause() { }
        public void resume() { }
        public void resizePty(int width, int height) { }
        public void closeStdin() { }
    }

    private static Any v2(long usageUsec, long memory, long pids) {
        return CgroupStats.pack(Metrics.newBuilder().setCpu(CPUStat.newBuilder().setUsageUsec(usageUsec))
                .setMemory(MemoryStat.newBuilder().setUsage(memory).setUsageLimit(-1L))
                .setPids(PidsStat.newBuilder().setCurrent(pids).setLimit(-1L)).build());
    }

    @Test
    void sumsCgroupV2ContainersIntoV2() throws Exception {
        Map<String, Any> stats = Map.of("c1", v2(1000, 4096, 1), "c2", v2(500, 8192, 2));
        TaskService tasks = new TaskService((ctx, req) -> new StatsOnly(stats.get(req.getId())), (ns, t, e) -> { });
        try (TtrpcServer server = new TtrpcServer(dir.resolve("task.sock"))) {
            tasks.services().forEach(server::register);
            server.start();
            try (TtrpcClient client = TtrpcClient.connect(server.address())) {
                for (String id : stats.keySet()) {
                    client.call(TaskService.V3, "Create", CreateTaskRequest.newBuilder().setId(id)
                            .setBundle(dir.toString()).setStdout("/dev/null").build(), CreateTaskResponse.parser(),
                            Duration.ofSeconds(10), Map.of("containerd-namespace-ttrpc", "k8s.io"));
                }
            }
        }
        RuncSandboxer sandboxer = new RuncSandboxer(new io.kuasar.sandbox.state.StateStore(dir.resolve("state")), null, null, tasks, "ttrpc+unix://unused");
        SandboxRecord r = new SandboxRecord("sb", "runc", SandboxRecord.Phase.RUNNING, "", null, null, null, null,
                null, null, null, null, 1, "", 0, 0, 0, 0, null);

        Metric metric = sandboxer.metrics(r);
        assertThat(metric.getId()).isEqualTo("sb");
        assertThat(metric.getData().getTypeUrl()).isEqualTo("io.containerd.cgroups.v2.Metrics");
        Metrics sum = Metrics.parseFrom(metric.getData().getValue());
        assertThat(sum.getCpu().getUsageUsec()).isEqualTo(1500);
        assertThat(sum.getMemory().getUsage()).isEqualTo(12288);
        assertThat(sum.getPids().getCurrent()).isEqualTo(3);
    }
}
