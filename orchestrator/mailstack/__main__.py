from mailstack.cli import main

main()
