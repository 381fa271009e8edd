(* The Redis subset over Lwt, as a control: its listener is registered with the
   event loop, not with a pending kernel request, so it closes when the process dies. *)
open Redis_proto
open Lwt.Syntax

type shutdown = Default | Graceful

let modes = [ ("default", Default); ("graceful", Graceful) ]
let mode_name m = fst (List.find (fun (_, m') -> m' = m) modes)

let serve_connection store _peer (input, output) =
  let rec loop pending =
    let* chunk = Lwt_io.read ~count:4096 input in
    if chunk = "" then Lwt.return_unit
    else
      let step = Commands.feed store ~now:(Unix.gettimeofday ()) (pending ^ chunk) in
      let* () = Lwt_io.write output step.reply in
      let* () = Lwt_io.flush output in
      if step.close then Lwt.return_unit else loop step.rest
  in
  (* An exception escaping a connection would reach Lwt's async hook, which exits. *)
  Lwt.catch (fun () -> loop "") (fun ex ->
      prerr_endline ("lwt_server: connection failed: " ^ Printexc.to_string ex);
      Lwt.return_unit)

let main ~port ~shutdown =
  let store = Commands.create_store () in
  let address = Unix.ADDR_INET (Unix.inet_addr_any, port) in
  let* server =
    Lwt_io.establish_server_with_client_address ~backlog:128 address (serve_connection store)
  in
  Printf.printf "lwt_server: shutdown=%s port=%d\n%!" (mode_name shutdown) port;
  match shutdown with
  | Default -> fst (Lwt.wait ()) (* SIGTERM's default action ends the process *)
  | Graceful ->
      let stopped, stop = Lwt.wait () in
      let (_ : Lwt_unix.signal_handler_id) =
        Lwt_unix.on_signal Sys.sigterm (fun _ ->
            if Lwt.is_sleeping stopped then Lwt.wakeup_later stop ())
      in
      let* () = stopped in
      let* () = Lwt_io.shutdown_server server in
      Printf.printf "lwt_server: SIGTERM received, listener closed\n%!";
      Lwt.return_unit

let () =
  let port = ref 6379 and shutdown = ref Default in
  let specs =
    [ ("--port", Arg.Set_int port, "PORT  TCP port to listen on (default 6379)");
      ( "--shutdown",
        Arg.Symbol (List.map fst modes, fun m -> shutdown := List.assoc m modes),
        " what SIGTERM does (default: no handler)" ) ]
  in
  let usage = "lwt_server [--port PORT] [--shutdown default|graceful]" in
  Arg.parse specs (fun extra -> raise (Arg.Bad ("unexpected argument " ^ extra))) usage;
  Lwt_main.run (main ~port:!port ~shutdown:!shutdown)
