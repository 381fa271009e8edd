(** The command table: PING, ECHO, SET (with PX/EX) and GET over an in-memory store.
    Time is an argument, so the table stays pure and expiry is testable. *)

type store

val create_store : unit -> store

val execute : store -> now:float -> Resp.t -> Resp.t
(** [execute store ~now request] answers one request (an array of bulk strings).
    [now] is in seconds (any monotonic-enough origin, used only for expiry).
    Unknown commands, wrong arity and non-array requests give a RESP error. *)

type step = {
  reply : string;  (** bytes to write back, possibly empty *)
  rest : string;  (** unconsumed input: the start of an incomplete request *)
  close : bool;  (** the input was malformed: write [reply], then close *)
}

val feed : store -> now:float -> string -> step
(** [feed store ~now input] answers every complete request in [input] (pipelining
    included). On malformed input the reply ends with a protocol error and [close]
    is set, as Redis does. *)
