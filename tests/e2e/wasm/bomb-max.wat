;; The memory bomb with its own maximum (16 pages, 1 MiB): memory.grow is refused there, and it exits 3.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1 16)
  (func (export "_start")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (call $proc_exit (i32.const 3))))
