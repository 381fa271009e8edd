type t =
  | Simple of string
  | Error of string
  | Integer of int
  | Bulk of string
  | Null_bulk
  | Array of t list
  | Null_array

let rec write buf = function
  | Simple s -> Buffer.add_char buf '+'; Buffer.add_string buf s; Buffer.add_string buf "\r\n"
  | Error s -> Buffer.add_char buf '-'; Buffer.add_string buf s; Buffer.add_string buf "\r\n"
  | Integer n -> Printf.bprintf buf ":%d\r\n" n
  | Bulk s -> Printf.bprintf buf "$%d\r\n%s\r\n" (String.length s) s
  | Null_bulk -> Buffer.add_string buf "$-1\r\n"
  | Array items ->
      Printf.bprintf buf "*%d\r\n" (List.length items);
      List.iter (write buf) items
  | Null_array -> Buffer.add_string buf "*-1\r\n"

let serialise v =
  let buf = Buffer.create 64 in
  write buf v;
  Buffer.contents buf

type parsed = Value of t * int | Incomplete | Malformed of string

(* Lengths beyond these are refused rather than waited for, so a garbage header
   cannot make a connection buffer forever (the limits are Redis's own). *)
let max_bulk_length = 512 * 1024 * 1024
let max_array_length = 1024 * 1024

(* A strict decimal: optional '-', then digits only (int_of_string would also
   take "0x1f" or "1_000"). *)
let decimal s =
  let n = String.length s in
  let start = if n > 0 && s.[0] = '-' then 1 else 0 in
  if n = start || n - start > 18 then None
  else if String.for_all (fun c -> c >= '0' && c <= '9') (String.sub s start (n - start))
  then Some (int_of_string s)
  else None

let find_crlf s from =
  match String.index_from_opt s from '\r' with
  | Some i when i + 1 < String.length s ->
      if s.[i + 1] = '\n' then `Found i else `Bare_cr
  | Some _ | None -> `Not_yet

let rec parse s pos =
  if pos >= String.length s then Incomplete
  else
    match find_crlf s (pos + 1) with
    | `Not_yet -> Incomplete
    | `Bare_cr -> Malformed "CR not followed by LF"
    | `Found eol -> (
        let line = String.sub s (pos + 1) (eol - pos - 1) in
        let next = eol + 2 in
        match s.[pos] with
        | '+' -> Value (Simple line, next)
        | '-' -> Value (Error line, next)
        | ':' -> (
            match decimal line with
            | Some n -> Value (Integer n, next)
            | None -> Malformed "invalid integer")
        | '$' -> parse_bulk s line next
        | '*' -> parse_array s line next
        | c -> Malformed (Printf.sprintf "unexpected byte %C at start of value" c))

and parse_bulk s line start =
  match decimal line with
  | Some -1 -> Value (Null_bulk, start)
  | Some n when n >= 0 && n <= max_bulk_length ->
      if String.length s < start + n + 2 then Incomplete
      else if s.[start + n] <> '\r' || s.[start + n + 1] <> '\n' then
        Malformed "bulk string not terminated by CRLF"
      else Value (Bulk (String.sub s start n), start + n + 2)
  | Some _ | None -> Malformed "invalid bulk length"

and parse_array s line start =
  match decimal line with
  | Some -1 -> Value (Null_array, start)
  | Some n when n >= 0 && n <= max_array_length ->
      let rec items acc remaining pos =
        if remaining = 0 then Value (Array (List.rev acc), pos)
        else
          match parse s pos with
          | Value (v, next) -> items (v :: acc) (remaining - 1) next
          | (Incomplete | Malformed _) as stop -> stop
      in
      items [] n start
  | Some _ | None -> Malformed "invalid multibulk length"

let rec pp ppf = function
  | Simple s -> Format.fprintf ppf "+%S" s
  | Error s -> Format.fprintf ppf "-%S" s
  | Integer n -> Format.fprintf ppf ":%d" n
  | Bulk s -> Format.fprintf ppf "$%S" s
  | Null_bulk -> Format.fprintf ppf "$nil"
  | Array items ->
      Format.fprintf ppf "[%a]" (Format.pp_print_list ~pp_sep:(fun ppf () -> Format.fprintf ppf ";@ ") pp) items
  | Null_array -> Format.fprintf ppf "*nil"

let equal (a : t) (b : t) = a = b
