open Redis_proto

let resp = Alcotest.testable Resp.pp Resp.equal
let command words = Resp.Array (List.map (fun w -> Resp.Bulk w) words)

let parsed =
  let pp ppf = function
    | Resp.Value (v, next) -> Format.fprintf ppf "Value (%a, %d)" Resp.pp v next
    | Resp.Incomplete -> Format.fprintf ppf "Incomplete"
    | Resp.Malformed why -> Format.fprintf ppf "Malformed %S" why
  in
  let equal a b =
    match (a, b) with
    | Resp.Value (x, i), Resp.Value (y, j) -> Resp.equal x y && i = j
    | Resp.Incomplete, Resp.Incomplete | Resp.Malformed _, Resp.Malformed _ -> true
    | _ -> false
  in
  Alcotest.testable pp equal

let test_serialise () =
  let check expected v = Alcotest.(check string) expected expected (Resp.serialise v) in
  check "+PONG\r\n" (Resp.Simple "PONG");
  check "-ERR x\r\n" (Resp.Error "ERR x");
  check ":-7\r\n" (Resp.Integer (-7));
  check "$5\r\nmango\r\n" (Resp.Bulk "mango");
  check "$0\r\n\r\n" (Resp.Bulk "");
  check "$-1\r\n" Resp.Null_bulk;
  check "*-1\r\n" Resp.Null_array;
  check "*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n" (command [ "ECHO"; "hi" ])

let test_round_trip () =
  let values =
    [ Resp.Simple "OK"; Resp.Error "ERR no"; Resp.Integer 0; Resp.Integer 123456789;
      Resp.Bulk "with\r\ninside"; Resp.Null_bulk; Resp.Null_array;
      Resp.Array [ Resp.Array []; Resp.Bulk "x"; Resp.Integer 1; Resp.Null_bulk ] ]
  in
  List.iter
    (fun v ->
      let wire = Resp.serialise v in
      Alcotest.check parsed (Resp.serialise v) (Resp.Value (v, String.length wire))
        (Resp.parse wire 0))
    values

let test_incomplete () =
  let wire = Resp.serialise (command [ "SET"; "apple"; "banana"; "PX"; "100" ]) in
  (* Every strict prefix must ask for more bytes, never misparse. *)
  for len = 0 to String.length wire - 1 do
    Alcotest.check parsed (Printf.sprintf "prefix %d" len) Resp.Incomplete
      (Resp.parse (String.sub wire 0 len) 0)
  done

let test_malformed () =
  let malformed input =
    Alcotest.check parsed (String.escaped input) (Resp.Malformed "") (Resp.parse input 0)
  in
  malformed "PING\r\n";
  malformed "$abc\r\n";
  malformed "$3\r\nabcd\r\n";
  malformed "*x\r\n";
  malformed "*1\r\n!\r\n";
  malformed ":12a\r\n";
  malformed "$-2\r\n";
  malformed "+a\rb\r\n"

let run store ?(now = 0.0) words = Commands.execute store ~now (command words)

let test_ping_echo () =
  let store = Commands.create_store () in
  Alcotest.check resp "PING" (Resp.Simple "PONG") (run store [ "PING" ]);
  Alcotest.check resp "ping lower case" (Resp.Simple "PONG") (run store [ "ping" ]);
  Alcotest.check resp "PING msg" (Resp.Bulk "hey") (run store [ "PING"; "hey" ]);
  Alcotest.check resp "ECHO" (Resp.Bulk "grape") (run store [ "ECHO"; "grape" ]);
  Alcotest.check resp "ECHO arity"
    (Resp.Error "ERR wrong number of arguments for 'echo' command")
    (run store [ "ECHO" ])

let test_set_get () =
  let store = Commands.create_store () in
  Alcotest.check resp "GET missing" Resp.Null_bulk (run store [ "GET"; "k" ]);
  Alcotest.check resp "SET" (Resp.Simple "OK") (run store [ "SET"; "k"; "v" ]);
  Alcotest.check resp "GET" (Resp.Bulk "v") (run store [ "GET"; "k" ]);
  Alcotest.check resp "overwrite" (Resp.Simple "OK") (run store [ "SET"; "k"; "w" ]);
  Alcotest.check resp "GET new" (Resp.Bulk "w") (run store [ "GET"; "k" ])

let test_expiry () =
  let store = Commands.create_store () in
  Alcotest.check resp "SET PX" (Resp.Simple "OK")
    (run store ~now:10.0 [ "SET"; "k"; "v"; "px"; "100" ]);
  Alcotest.check resp "before" (Resp.Bulk "v") (run store ~now:10.099 [ "GET"; "k" ]);
  Alcotest.check resp "after" Resp.Null_bulk (run store ~now:10.101 [ "GET"; "k" ]);
  Alcotest.check resp "SET EX" (Resp.Simple "OK")
    (run store ~now:0.0 [ "SET"; "e"; "v"; "EX"; "2" ]);
  Alcotest.check resp "EX before" (Resp.Bulk "v") (run store ~now:1.9 [ "GET"; "e" ]);
  Alcotest.check resp "EX after" Resp.Null_bulk (run store ~now:2.0 [ "GET"; "e" ]);
  Alcotest.check resp "bad count" (Resp.Error "ERR value is not an integer or out of range")
    (run store [ "SET"; "k"; "v"; "PX"; "soon" ]);
  Alcotest.check resp "zero" (Resp.Error "ERR invalid expire time in 'set' command")
    (run store [ "SET"; "k"; "v"; "PX"; "0" ]);
  Alcotest.check resp "bad option" (Resp.Error "ERR syntax error")
    (run store [ "SET"; "k"; "v"; "KEEP"; "1" ])

let test_errors () =
  let store = Commands.create_store () in
  Alcotest.check resp "unknown" (Resp.Error "ERR unknown command 'FLY'") (run store [ "FLY" ]);
  let protocol = Resp.Error "ERR Protocol error: expected an array of bulk strings" in
  Alcotest.check resp "not an array" protocol
    (Commands.execute store ~now:0.0 (Resp.Simple "PING"));
  Alcotest.check resp "empty array" protocol (Commands.execute store ~now:0.0 (Resp.Array []));
  Alcotest.check resp "integer item" protocol
    (Commands.execute store ~now:0.0 (Resp.Array [ Resp.Integer 1 ]))

let test_feed () =
  let store = Commands.create_store () in
  let ping = Resp.serialise (command [ "PING" ]) in
  let step = Commands.feed store ~now:0.0 (ping ^ ping ^ String.sub ping 0 5) in
  Alcotest.(check string) "two pipelined replies" "+PONG\r\n+PONG\r\n" step.reply;
  Alcotest.(check string) "partial kept" (String.sub ping 0 5) step.rest;
  Alcotest.(check bool) "open" false step.close;
  let step = Commands.feed store ~now:0.0 (ping ^ "GARBAGE\r\n") in
  Alcotest.(check bool) "malformed closes" true step.close;
  Alcotest.(check bool) "reply ends with a protocol error" true
    (String.starts_with ~prefix:"+PONG\r\n-ERR Protocol error" step.reply)

let () =
  Alcotest.run "redis_proto"
    [ ( "resp",
        [ Alcotest.test_case "serialise" `Quick test_serialise;
          Alcotest.test_case "round trip" `Quick test_round_trip;
          Alcotest.test_case "incomplete prefixes" `Quick test_incomplete;
          Alcotest.test_case "malformed" `Quick test_malformed ] );
      ( "commands",
        [ Alcotest.test_case "PING and ECHO" `Quick test_ping_echo;
          Alcotest.test_case "SET and GET" `Quick test_set_get;
          Alcotest.test_case "expiry" `Quick test_expiry;
          Alcotest.test_case "errors" `Quick test_errors;
          Alcotest.test_case "feed" `Quick test_feed ] ) ]
