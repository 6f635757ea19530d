;; Never ends on its own (a br_if loop, which Chicory's interpreter would not check for interrupts): Kill must stop it.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br_if $l (i32.const 1)))))
