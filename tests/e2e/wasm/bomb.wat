;; A memory bomb: grows a page at a time. Past the container's memory limit the sandboxer ends it as the OOM killer
;; would (exit 137, an OOM event); if memory.grow is ever refused (the module's own maximum), it exits 3. Without
;; the limit it would take the daemon's heap.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (call $proc_exit (i32.const 3))))
