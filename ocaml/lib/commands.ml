type entry = { value : string; expires_at : float option }
type store = (string, entry) Hashtbl.t

let create_store () : store = Hashtbl.create 64

let wrong_arity name =
  Resp.Error (Printf.sprintf "ERR wrong number of arguments for '%s' command" name)

let not_an_integer = Resp.Error "ERR value is not an integer or out of range"

let get store ~now key =
  match Hashtbl.find_opt store key with
  | Some { value; expires_at = None } -> Resp.Bulk value
  | Some { value; expires_at = Some t } when now < t -> Resp.Bulk value
  | Some _ ->
      (* Expired: drop it lazily, on the first read after the deadline. *)
      Hashtbl.remove store key;
      Resp.Null_bulk
  | None -> Resp.Null_bulk

(* SET key value [PX ms | EX s]: the option's unit scales the count to seconds. *)
let set store ~now key value options =
  let store_with expires_at =
    Hashtbl.replace store key { value; expires_at };
    Resp.Simple "OK"
  in
  match options with
  | [] -> store_with None
  | [ unit; count ] -> (
      let scale =
        match String.uppercase_ascii unit with
        | "PX" -> Some 0.001
        | "EX" -> Some 1.0
        | _ -> None
      in
      match (scale, int_of_string_opt count) with
      | None, _ -> Resp.Error "ERR syntax error"
      | Some _, None -> not_an_integer
      | Some _, Some n when n <= 0 -> Resp.Error "ERR invalid expire time in 'set' command"
      | Some scale, Some n -> store_with (Some (now +. (float_of_int n *. scale))))
  | _ -> Resp.Error "ERR syntax error"

let bulk_strings items =
  List.fold_right
    (fun item acc ->
      match (item, acc) with
      | Resp.Bulk s, Some rest -> Some (s :: rest)
      | _ -> None)
    items (Some [])

let dispatch store ~now name args =
  match (String.uppercase_ascii name, args) with
  | "PING", [] -> Resp.Simple "PONG"
  | "PING", [ message ] -> Resp.Bulk message
  | "PING", _ -> wrong_arity "ping"
  | "ECHO", [ message ] -> Resp.Bulk message
  | "ECHO", _ -> wrong_arity "echo"
  | "GET", [ key ] -> get store ~now key
  | "GET", _ -> wrong_arity "get"
  | "SET", key :: value :: options -> set store ~now key value options
  | "SET", _ -> wrong_arity "set"
  | _ -> Resp.Error (Printf.sprintf "ERR unknown command '%s'" name)

let execute store ~now request =
  let not_a_command = Resp.Error "ERR Protocol error: expected an array of bulk strings" in
  match request with
  | Resp.Array items -> (
      match bulk_strings items with
      | Some (name :: args) -> dispatch store ~now name args
      | Some [] | None -> not_a_command)
  | _ -> not_a_command

type step = { reply : string; rest : string; close : bool }

let feed store ~now input =
  let out = Buffer.create 64 in
  let rec loop pos =
    match Resp.parse input pos with
    | Resp.Value (request, next) ->
        Buffer.add_string out (Resp.serialise (execute store ~now request));
        loop next
    | Resp.Incomplete ->
        let rest = String.sub input pos (String.length input - pos) in
        { reply = Buffer.contents out; rest; close = false }
    | Resp.Malformed why ->
        Buffer.add_string out (Resp.serialise (Resp.Error ("ERR Protocol error: " ^ why)));
        { reply = Buffer.contents out; rest = ""; close = true }
  in
  loop 0
