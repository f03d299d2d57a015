from ccd.server.daemon import main

main()
