package io.kuasar.vmm.task;

import com.google.protobuf.Empty;
import io.kuasar.api.task.v3.StateRequest;
import io.kuasar.api.task.v3.StateResponse;
import io.kuasar.api.vmm.CheckRequest;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.sandbox.ttrpc.TtrpcServer;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

/**
 * The training run behind the image's AOT cache ({@code --train}, run at image build time in the image's own root):
 * loads and links what a booting agent loads, by assembling the services and serving a few real calls, without
 * touching the machine it runs on (no mounts, no network, no containers).
 */
final class Training {
    private Training() {
    }

    static void run() throws Exception {
        Path dir = Files.createTempDirectory("vmm-task-train");
        TaskConfig.parse("console=ttyS0 task.sharefs_type=9p task.log_level=info");
        try (TtrpcServer server = new TtrpcServer(dir.resolve("train.sock"))) {
            // the agent's services on a socket instead of the port: the frames and handlers are what matters
            VmmTaskMain.services(dir.resolve("state"), () -> { }).forEach(server::register);
            server.start();
            try (TtrpcClient c = TtrpcClient.connect(server.socketPath())) {
                for (int i = 0; i < 20; i++) {
                    c.call(SandboxService.NAME, "Check", CheckRequest.getDefaultInstance(), Empty.parser(),
                            Duration.ofSeconds(5));
                    try {
                        c.call("containerd.task.v2.Task", "State", StateRequest.newBuilder().setId("train").build(),
                                StateResponse.parser(), Duration.ofSeconds(5));
                    } catch (io.grpc.StatusRuntimeException expected) {
                        // NotFound: the path through the Task service is what we want loaded
                    }
                }
            }
        }
        System.out.println("vmm-task: training run done");
    }
}
