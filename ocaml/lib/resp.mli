(** RESP2 values, their wire encoding, and an incremental parser. *)

type t =
  | Simple of string  (** [+OK] *)
  | Error of string  (** [-ERR ...] *)
  | Integer of int  (** [:42] *)
  | Bulk of string  (** [$3 foo] *)
  | Null_bulk  (** [$-1] *)
  | Array of t list  (** [*2 ...] *)
  | Null_array  (** [*-1] *)

val serialise : t -> string
(** [serialise v] is the RESP2 encoding of [v]. *)

type parsed =
  | Value of t * int  (** a complete value and the offset just after it *)
  | Incomplete  (** the input stops inside a value: read more bytes *)
  | Malformed of string  (** the input can never become a value *)

val parse : string -> int -> parsed
(** [parse s pos] decodes one value starting at offset [pos] of [s]. *)

val pp : Format.formatter -> t -> unit
val equal : t -> t -> bool
