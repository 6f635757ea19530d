;; Traps at once: the container exits non-zero with the trap's message in its log.
(module
  (memory (export "memory") 1)
  (func (export "_start") unreachable))
