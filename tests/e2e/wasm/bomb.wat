;; A memory bomb: grows a page at a time until memory.grow is refused (the container's memory limit caps it), then
;; exits 3. Without a cap it would take the daemon's heap.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (call $proc_exit (i32.const 3))))
