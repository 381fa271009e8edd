(* The Redis subset over eio, with the three SIGTERM behaviours the lab compares.
   The protocol lives in Redis_proto; this file is only sockets and shutdown. *)
open Redis_proto

type shutdown = Default | Graceful | Prompt

let modes = [ ("default", Default); ("graceful", Graceful); ("prompt", Prompt) ]
let mode_name m = fst (List.find (fun (_, m') -> m' = m) modes)

let serve_connection store clock flow _peer =
  let chunk = Cstruct.create 4096 in
  let rec loop pending =
    match Eio.Flow.single_read flow chunk with
    | exception End_of_file -> ()
    | n ->
        let input = pending ^ Cstruct.to_string ~len:n chunk in
        let step = Commands.feed store ~now:(Eio.Time.now clock) input in
        if step.reply <> "" then Eio.Flow.copy_string step.reply flow;
        if not step.close then loop step.rest
  in
  loop ""

(* The handler only sets a flag and broadcasts, the one thing eio documents as safe
   in a signal handler; a second SIGTERM just does it again. The returned function
   blocks the calling fiber until the first SIGTERM. *)
let install_sigterm_waiter () =
  let requested = Atomic.make false and changed = Eio.Condition.create () in
  let on_sigterm _ = Atomic.set requested true; Eio.Condition.broadcast changed in
  Sys.set_signal Sys.sigterm (Sys.Signal_handle on_sigterm);
  fun () -> Eio.Condition.loop_no_mutex changed (fun () -> if Atomic.get requested then Some () else None)

let main ~port ~reuse_port ~shutdown env =
  let store = Commands.create_store () in
  let handler = serve_connection store (Eio.Stdenv.clock env) in
  let on_error ex = Eio.traceln "eio_server: connection failed: %a" Eio.Exn.pp ex in
  Eio.Switch.run @@ fun sw ->
  let address = `Tcp (Eio.Net.Ipaddr.V4.any, port) in
  let listener =
    Eio.Net.listen ~sw ~reuse_addr:true ~reuse_port ~backlog:128 (Eio.Stdenv.net env) address
  in
  Printf.printf "eio_server: backend=%s shutdown=%s port=%d reuse_port=%b\n%!"
    (Eio.Stdenv.backend_id env) (mode_name shutdown) port reuse_port;
  (match shutdown with
   | Default ->
       (* The seed's program: SIGTERM's default action kills the process mid-accept. *)
       Eio.Net.run_server ~on_error listener handler
   | Graceful ->
       (* The "rubber mallet": stop accepting, then wait for every connection to end. *)
       let wait_for_sigterm = install_sigterm_waiter () in
       let stop, request_stop = Eio.Promise.create () in
       Eio.Fiber.fork_daemon ~sw (fun () ->
           wait_for_sigterm ();
           Eio.Promise.resolve request_stop ();
           `Stop_daemon);
       Eio.Net.run_server ~on_error ~stop listener handler
   | Prompt ->
       (* The fix: cancelling run_server cancels the pending accept and every
          connection at once; leaving [sw] right after closes the listener, all
          before the process exits. *)
       let wait_for_sigterm = install_sigterm_waiter () in
       Eio.Fiber.first wait_for_sigterm (fun () -> Eio.Net.run_server ~on_error listener handler));
  Printf.printf "eio_server: SIGTERM received, closing the listener (shutdown=%s)\n%!"
    (mode_name shutdown)

let () =
  let port = ref 6379 and reuse_port = ref false and shutdown = ref Default in
  let specs =
    [ ("--port", Arg.Set_int port, "PORT  TCP port to listen on (default 6379)");
      ("--reuse-port", Arg.Set reuse_port, " set SO_REUSEPORT on the listener");
      ( "--shutdown",
        Arg.Symbol (List.map fst modes, fun m -> shutdown := List.assoc m modes),
        " what SIGTERM does (default: no handler)" ) ]
  in
  let usage = "eio_server [--port PORT] [--reuse-port] [--shutdown default|graceful|prompt]" in
  Arg.parse specs (fun extra -> raise (Arg.Bad ("unexpected argument " ^ extra))) usage;
  match Eio_main.run (main ~port:!port ~reuse_port:!reuse_port ~shutdown:!shutdown) with
  | () -> ()
  | exception Failure reason when String.starts_with ~prefix:"io_uring" reason ->
      (* A forced backend that cannot start: say why in words a container user can act on. *)
      Printf.eprintf
        "eio_server: %s; EIO_BACKEND=%s forces io_uring and this process may not use it \
         (in a container: the seccomp profile blocks io_uring_setup; run it with \
         seccomp=unconfined or a profile allowing io_uring)\n%!"
        reason (Option.value (Sys.getenv_opt "EIO_BACKEND") ~default:"");
      exit 2
